"""The shape all worker-tracked work shares, and worker probes (a diagnostic round trip)."""

from typing import ClassVar

from django.conf import settings
from django.db import models


class TrackedWork(models.Model):
    """Lifecycle fields of every row a worker works on: validations, imports, builds, jobs.

    Subclasses override ``status`` with their own choices and name three sets of statuses:
    ``WAITING`` (a worker may claim the row), ``WORKING`` (a worker holds it; the first one is
    set on claim) and ``LOST`` (the status recorded when the worker holding it died). A row is
    *claimed* while its status is a working one and ``started_at`` is set; core.
    tracked_work is the one path that claims, beats and finishes rows.
    """

    WAITING: ClassVar[tuple[str, ...]] = ()
    WORKING: ClassVar[tuple[str, ...]] = ()
    LOST: ClassVar[str] = "failed"

    status = models.CharField(max_length=20)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="How many times a worker claimed it.")
    worker = models.CharField(max_length=255, blank=True, help_text="The worker that last claimed it.")
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="Last sign of life of that worker.")

    class Meta:
        abstract = True

    @property
    def is_claimed(self) -> bool:
        """Whether a worker holds the row right now (or held it when it died)."""
        return self.status in self.WORKING and self.started_at is not None and self.finished_at is None


class WorkerProbe(TrackedWork):
    WAITING = ("queued",)
    WORKING = ("running",)

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        ANSWERED = "answered", "Answered"
        FAILED = "failed", "Failed"

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"probe {self.pk} {self.status}"


class AuditEvent(models.Model):
    """A change made outside the workflows (an add, change or delete in the Django admin): who, what, when.

    One row per admin action. ``changes`` holds every changed field as ``{field: [before, after]}``
    (a deletion holds the deleted row's values as before). ``field`` lists the changed field
    names; ``old_value``/``new_value`` are filled when exactly one field changed.
    """

    class Action(models.TextChoices):
        ADD = "add", "Added"
        CHANGE = "change", "Changed"
        DELETE = "delete", "Deleted"

    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    action = models.CharField(max_length=8, choices=Action.choices, default=Action.CHANGE)
    model = models.CharField(max_length=100)
    object_id = models.CharField(max_length=64)
    object_repr = models.CharField(max_length=200, blank=True)
    field = models.CharField(max_length=500, blank=True)
    old_value = models.TextField(blank=True)
    new_value = models.TextField(blank=True)
    changes = models.JSONField(default=dict, blank=True)
    source = models.CharField(max_length=32, default="admin")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["model", "object_id"])]

    def __str__(self) -> str:
        return f"{self.model} {self.object_id}: {self.field} {self.old_value!r} -> {self.new_value!r}"
