"""Admin pieces shared by every app: status edits made in the admin are audited."""

from django.contrib import admin

from modelhub.core.models import AuditEvent


class AuditedStatusAdmin(admin.ModelAdmin):
    """A ModelAdmin that records an AuditEvent whenever an admin changes a watched field.

    Workflows (review, claims) change statuses through services that keep their own history;
    the admin bypasses them, so every such edit leaves a trace of who changed what.
    """

    audited_fields: tuple[str, ...] = ("status",)

    def save_model(self, request, obj, form, change):
        before = {}
        if change and obj.pk is not None:
            stored = type(obj)._default_manager.filter(pk=obj.pk).values(*self.audited_fields).first() or {}
            before = {field: stored.get(field) for field in self.audited_fields}
        super().save_model(request, obj, form, change)
        for field, old in before.items():
            new = getattr(obj, field)
            if old != new:
                AuditEvent.objects.create(
                    actor=request.user,
                    model=obj._meta.label,
                    object_id=str(obj.pk),
                    field=field,
                    old_value="" if old is None else str(old),
                    new_value="" if new is None else str(new),
                )
                self.status_changed(request, obj, field, old, new)

    def status_changed(self, request, obj, field, old, new) -> None:
        """Hook for apps that keep their own history too (heads write a HeadEvent)."""


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "actor", "model", "object_id", "field", "old_value", "new_value"]
    list_filter = ["model", "field"]
    readonly_fields = [field.name for field in AuditEvent._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
