"""The admin of aliases: audited, and an alias moves here only under the same four eyes as in the API."""

from django.contrib import admin
from django.core.exceptions import PermissionDenied

from core.admin import AuditedAdmin
from heads.models import HeadVersion
from heads.selectors import head_version_authors, head_versions_by_id
from releases.models import Alias, AliasMove


class AliasMoveInline(admin.TabularInline):
    model = AliasMove
    fk_name = "alias"
    extra = 0
    can_delete = False
    readonly_fields = ["action", "from_head", "to_head", "actor", "comment", "created_at"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Alias)
class AliasAdmin(AuditedAdmin):
    list_display = ["name", "task", "head", "updated_by", "updated_at"]
    list_filter = ["task__team"]
    readonly_fields = ["task"]
    inlines = [AliasMoveInline]

    def check_change(self, request, obj, before: dict) -> None:
        """Refuse pointing the alias at a version that is not approved, or that the admin authored."""
        if obj.head_id is None or obj.head_id == before.get("head_id"):
            return
        head = head_versions_by_id(ids=[obj.head_id]).get()
        if head.status != HeadVersion.Status.APPROVED:
            raise PermissionDenied(
                f"Only approved head versions can be aliased; {head.task.slug} v{head.version} is '{head.status}'."
            )
        phrases = head_version_authors(head=head).get(request.user.pk)
        if phrases:
            raise PermissionDenied(
                f"You {'; you '.join(phrases)}, so you cannot point alias '{obj.name}' at it, in the admin or "
                "elsewhere. Four eyes: another reviewer, who did not write, carry, derive or request this "
                "version, must set or move the alias."
            )

    def save_model(self, request, obj, form, change):
        previous = Alias.objects.filter(pk=obj.pk).values_list("head_id", flat=True).first() if change else None
        obj.updated_by = request.user
        super().save_model(request, obj, form, change)
        if obj.head_id != previous:
            AliasMove.objects.create(
                alias=obj,
                action=AliasMove.Action.SET
                if previous is None
                else (AliasMove.Action.DELETE if obj.head_id is None else AliasMove.Action.MOVE),
                from_head_id=previous,
                to_head_id=obj.head_id,
                actor=request.user,
                comment="Changed in the Django admin, outside the release workflow.",
            )
