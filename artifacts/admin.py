from django.contrib import admin

from artifacts.models import Blob, Upload


@admin.register(Blob)
class BlobAdmin(admin.ModelAdmin):
    list_display = ["sha256", "size_bytes", "created_at"]
    search_fields = ["sha256"]
    readonly_fields = ["sha256", "size_bytes", "created_at"]


@admin.register(Upload)
class UploadAdmin(admin.ModelAdmin):
    list_display = ["filename", "team", "blob", "created_by", "created_at"]
    list_filter = ["team"]
