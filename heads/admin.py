from django.contrib import admin

from heads.models import HeadEvent, HeadVersion, ModelImport, Task


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
class HeadVersionAdmin(admin.ModelAdmin):
    list_display = ["task", "version", "backbone", "status", "output_width", "created_by", "created_at"]
    list_filter = ["status", "task__team"]
    readonly_fields = ["blob", "source_blob", "spec", "origin"]
    inlines = [HeadEventInline]


@admin.register(ModelImport)
class ModelImportAdmin(admin.ModelAdmin):
    list_display = ["id", "team", "backbone_name", "status", "created_at"]
    list_filter = ["status", "team"]
