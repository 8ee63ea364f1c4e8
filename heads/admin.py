from django.contrib import admin

from heads.models import HeadEvent, HeadVersion, ModelImport, Task
from modelhub.core.admin import AuditedStatusAdmin


class HeadEventInline(admin.TabularInline):
    model = HeadEvent
    extra = 0
    can_delete = False
    readonly_fields = ["action", "actor", "old_status", "new_status", "comment", "created_at"]


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ["slug", "team", "created_at"]
    list_filter = ["team"]
    search_fields = ["slug", "description"]


@admin.register(HeadVersion)
class HeadVersionAdmin(AuditedStatusAdmin):
    list_display = ["task", "version", "backbone", "status", "output_width", "created_by", "created_at"]
    list_filter = ["status", "task__team"]
    readonly_fields = ["blob", "source_blob", "spec", "origin"]
    inlines = [HeadEventInline]

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
class ModelImportAdmin(AuditedStatusAdmin):
    list_display = ["id", "team", "backbone_name", "status", "created_at"]
    list_filter = ["status", "team"]
