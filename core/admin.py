"""Admin pieces shared by every app: every add, change and delete made in the admin is audited.

The admin bypasses the services' workflows (review, four eyes, claims), so each model admin that
edits registry rows derives from AuditedAdmin: authorship and review fields are read-only, an
app can refuse a change (``check_change``, e.g. an author approving their own head), and every
add, change and delete leaves an AuditEvent with who, when, which object and each changed
field's value before and after.
"""

import datetime
import decimal
import uuid

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db import transaction

from core.models import AuditEvent

# Fields that say who did what: never edited by hand (AuditedAdmin makes them read-only).
AUTHORSHIP_FIELDS = (
    "created_by",
    "reviewed_by",
    "reviewed_at",
    "carried_by",
    "carried_from",
    "retried_by",
    "retry_of",
    "updated_by",
    "job",
)


def _plain(value):
    """Return a JSON-safe form of a field's stored value."""
    if value is None or isinstance(value, bool | int | float | str | list | dict):
        return value
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    return str(value)


def audit_snapshot(obj) -> dict:
    """Return every concrete field's stored value of a model instance (foreign keys by id)."""
    return {field.attname: _plain(getattr(obj, field.attname)) for field in obj._meta.concrete_fields}


def audit_record(*, user, obj, action: str, before: dict, after: dict) -> AuditEvent | None:
    """Write one AuditEvent for an admin action on `obj`; None when a change changed nothing."""
    changes = {name: [before.get(name), after.get(name)] for name in {*before, *after}}
    changes = {name: values for name, values in sorted(changes.items()) if values[0] != values[1]}
    if action == AuditEvent.Action.CHANGE and not changes:
        return None
    only = next(iter(changes.values())) if len(changes) == 1 else None
    return AuditEvent.objects.create(
        actor=user if getattr(user, "pk", None) else None,
        action=action,
        model=obj._meta.label,
        object_id=str(before.get("id") or after.get("id") or obj.pk),
        object_repr=str(obj)[:200],
        field=", ".join(changes)[:500],
        old_value="" if only is None or only[0] is None else str(only[0]),
        new_value="" if only is None or only[1] is None else str(only[1]),
        changes=changes,
    )


class AuditedAdmin(admin.ModelAdmin):
    """A ModelAdmin whose every add, change and delete writes an AuditEvent (see the module docstring).

    Subclasses may override ``check_change(request, obj, before)`` to refuse a change by raising
    PermissionDenied with a message (the form shows it; nothing is saved), and
    ``status_changed`` to keep their own history when a field of ``audited_fields`` changes.
    """

    audited_fields: tuple[str, ...] = ("status",)

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        names = {field.name for field in self.model._meta.get_fields()}
        return fields + [name for name in AUTHORSHIP_FIELDS if name in names and name not in fields]

    def check_change(self, request, obj, before: dict) -> None:
        """Refuse a change by raising PermissionDenied("why, and what to do instead"); `before` is {} on add."""

    def status_changed(self, request, obj, field, old, new) -> None:
        """Hook for apps that keep their own history too (heads write a HeadEvent)."""

    def _stored(self, obj) -> dict:
        if obj.pk is None:
            return {}
        stored = type(obj)._default_manager.filter(pk=obj.pk).first()
        return audit_snapshot(stored) if stored is not None else {}

    def get_form(self, request, obj=None, change=False, **kwargs):
        form_class = super().get_form(request, obj, change=change, **kwargs)
        model_admin = self

        class CheckedForm(form_class):
            def _post_clean(self):
                super()._post_clean()  # the instance now holds the submitted values
                try:
                    model_admin.check_change(request, self.instance, model_admin._stored(self.instance))
                except PermissionDenied as exc:
                    self.add_error(None, str(exc))

        CheckedForm.__name__ = form_class.__name__
        return CheckedForm

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            before = self._stored(obj) if change else {}
            self.check_change(request, obj, before)  # also guards calls that bypass the form
            if not change and hasattr(obj, "created_by_id") and obj.created_by_id is None:
                obj.created_by = request.user
            super().save_model(request, obj, form, change)
            after = audit_snapshot(obj)
            audit_record(
                user=request.user,
                obj=obj,
                action=AuditEvent.Action.CHANGE if change else AuditEvent.Action.ADD,
                before=before,
                after=after,
            )
            names = {field.name: field.attname for field in self.model._meta.concrete_fields}
            for field in self.audited_fields:
                name = names.get(field)
                if change and name and before.get(name) != after.get(name):
                    self.status_changed(request, obj, field, before.get(name), after.get(name))

    def delete_model(self, request, obj):
        with transaction.atomic():
            before = audit_snapshot(obj)
            audit_record(user=request.user, obj=obj, action=AuditEvent.Action.DELETE, before=before, after={})
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            for obj in queryset:
                audit_record(
                    user=request.user, obj=obj, action=AuditEvent.Action.DELETE, before=audit_snapshot(obj), after={}
                )
            super().delete_queryset(request, queryset)


# The name the first audited admins used (status edits only); every change is audited now.
AuditedStatusAdmin = AuditedAdmin


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "actor", "action", "model", "object_id", "object_repr", "field"]
    list_filter = ["action", "model"]
    search_fields = ["object_id", "object_repr", "field"]
    readonly_fields = [field.name for field in AuditEvent._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
