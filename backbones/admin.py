from django.contrib import admin

from backbones.models import BackboneVersion
from core.admin import AuditedStatusAdmin


@admin.register(BackboneVersion)
class BackboneVersionAdmin(AuditedStatusAdmin):
    list_display = ["name", "version", "team", "status", "created_by", "created_at"]
    list_filter = ["team", "status"]
    search_fields = ["name", "weights_sha256"]
    readonly_fields = ["blob", "weights_sha256", "spec", "parent", "duplicate_of", "origin"]
