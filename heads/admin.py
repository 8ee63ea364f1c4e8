"""The admin of tasks, head versions and imports: audited, with four eyes on approving a head here too."""

from django.contrib import admin
from django.core.exceptions import PermissionDenied

from core.admin import AuditedAdmin
from heads.models import HeadEvent, HeadVersion, ModelImport, Task
from heads.selectors import head_version_authors


class HeadEventInline(admin.TabularInline):
    model = HeadEvent
    extra = 0
    can_delete = False
    readonly_fields = ["action", "actor", "old_status", "new_status", "comment", "created_at"]

    def has_add_permission(self, request, obj=None):
        return False  # the history is written by the services (and by HeadVersionAdmin), never by hand


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ["slug", "team", "created_at"]
    list_filter = ["team"]
    search_fields = ["slug", "description"]


@admin.register(HeadVersion)
class HeadVersionAdmin(AuditedAdmin):
    list_display = ["task", "version", "backbone", "status", "output_width", "created_by", "created_at"]
    list_filter = ["status", "task__team"]
    # A version is an immutable artifact: what it is and who made it are read-only here.
    readonly_fields = [
        "task", "version", "backbone", "blob", "source_blob", "branch_blob", "branch", "spec", "origin",
    ]  # fmt: skip
    inlines = [HeadEventInline]

    def check_change(self, request, obj, before: dict) -> None:
        """Refuse an author (by provenance) approving the version here: four eyes hold in the admin too."""
        if obj.status != HeadVersion.Status.APPROVED or before.get("status") == HeadVersion.Status.APPROVED:
            return
        if obj.pk is None:
            raise PermissionDenied(
                "A head version cannot be added already approved in the admin; add it as a draft and have "
                "a reviewer who did not author it approve it."
            )
        phrases = head_version_authors(head=HeadVersion.objects.select_related("task").get(pk=obj.pk)).get(
            request.user.pk
        )
        if phrases:
            raise PermissionDenied(
                f"You {'; you '.join(phrases)}, so you cannot approve it, in the admin or elsewhere. Four eyes: "
                "another reviewer, who did not write, carry, derive or request this version, must approve it."
            )

    def status_changed(self, request, obj, field, old, new) -> None:
        HeadEvent.objects.create(
            head=obj,
            actor=request.user,
            action=HeadEvent.Action.ADMIN_EDIT,
            old_status=old or "",
            new_status=new or "",
            comment="Status changed in the Django admin, outside the review workflow.",
        )


@admin.register(ModelImport)
class ModelImportAdmin(AuditedAdmin):
    list_display = ["id", "team", "backbone_name", "status", "created_at"]
    list_filter = ["status", "team"]
