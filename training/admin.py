"""The admin of datasets, jobs and forgetting reports: audited, authorship read-only.

A report accepted here would not carry its heads (only training.services.report_decide does),
so its status is read-only: reviewers decide reports through the API or the dashboard.
"""

from django.contrib import admin

from core.admin import AuditedAdmin
from training.models import Dataset, ForgettingReport, Job


@admin.register(Dataset)
class DatasetAdmin(AuditedAdmin):
    list_display = ["name", "team", "format", "status", "created_by", "created_at"]
    list_filter = ["status", "team"]
    readonly_fields = ["blob"]


@admin.register(Job)
class JobAdmin(AuditedAdmin):
    list_display = ["id", "team", "kind", "status", "created_by", "retried_by", "created_at"]
    list_filter = ["kind", "status", "team"]
    readonly_fields = ["kind", "params", "result"]


@admin.register(ForgettingReport)
class ForgettingReportAdmin(AuditedAdmin):
    list_display = ["id", "job", "parent", "backbone", "status", "reviewed_by", "created_at"]
    list_filter = ["status"]
    readonly_fields = ["parent", "backbone", "rows", "status"]
