"""Datasets, training jobs (their progress and metrics), and forgetting reports."""

from django.conf import settings
from django.db import models

from core.models import TrackedWork


class Dataset(TrackedWork):
    """An uploaded .npz (x or x_<name>, y[, validation, labels]), table (CSV, JSON Lines, Parquet)
    mapped by `columns`, or .zip of class folders of images.

    `inputs` lists one {"name", "kind", "shape", "dtype"} per input (the data contract with
    training.work.datasets.dataset_arrays); `input_shape` is the single input's shape.
    """

    WAITING = ("validating",)
    WORKING = ("validating",)
    LOST = "rejected"

    class Status(models.TextChoices):
        VALIDATING = "validating", "Validating"
        READY = "ready", "Ready"
        REJECTED = "rejected", "Rejected"

    class Format(models.TextChoices):
        NPZ = "npz", "NumPy arrays (.npz)"
        IMAGES = "images", "Image folders (.zip)"
        CSV = "csv", "CSV table (.csv)"
        JSONL = "jsonl", "JSON Lines (.jsonl, .ndjson)"
        PARQUET = "parquet", "Parquet table (.parquet)"

    team = models.ForeignKey("teams.Team", on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=100)
    format = models.CharField(max_length=8, choices=Format.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.VALIDATING)
    blob = models.ForeignKey("artifacts.Blob", on_delete=models.PROTECT, related_name="datasets")
    filename = models.CharField(max_length=255, blank=True)
    num_examples = models.PositiveIntegerField(null=True, blank=True)
    num_validation = models.PositiveIntegerField(null=True, blank=True)
    input_shape = models.JSONField(null=True, blank=True)
    num_classes = models.PositiveIntegerField(null=True, blank=True)
    target = models.CharField(max_length=16, blank=True)  # "classes" or "values"
    class_histogram = models.JSONField(default=dict, blank=True)
    labels = models.JSONField(default=list, blank=True)
    x_sha256 = models.CharField(max_length=64, blank=True)
    columns = models.JSONField(default=dict, blank=True, help_text="The column mapping used (tables).")
    inputs = models.JSONField(default=list, blank=True, help_text="One {name, kind, shape, dtype} per input.")
    preview = models.JSONField(default=dict, blank=True, help_text="Columns, row count, first rows, labels.")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.pk})"


class Job(TrackedWork):
    WAITING = ("queued",)
    WORKING = ("running",)

    class Kind(models.TextChoices):
        TRAIN_HEAD = "train_head", "Train a head"
        TRAIN_HEADS = "train_heads", "Train several heads"
        FINE_TUNE = "fine_tune", "Fine-tune"
        GROW_BACKBONE = "grow_backbone", "Grow a backbone"
        EVALUATE_HEAD = "evaluate_head", "Evaluate a head"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    team = models.ForeignKey("teams.Team", on_delete=models.CASCADE, related_name="jobs")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    params = models.JSONField(default=dict)
    progress = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=list, blank=True)
    log = models.TextField(blank=True)
    result = models.JSONField(default=dict, blank=True)
    cancel_requested = models.BooleanField(default=False)
    retry_of = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="retries")
    # A retry keeps the original requester in created_by (four eyes); the member who retried is here.
    retried_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Who retried it (created_by stays the member who requested the original job).",
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind} job {self.pk} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.SUCCEEDED, self.Status.FAILED, self.Status.CANCELLED)


class ForgettingReport(models.Model):
    """How the parent's approved heads score through a changed backbone, before and after."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for a reviewer"
        ACCEPTED = "accepted", "Accepted"
        REJECTED = "rejected", "Rejected"

    job = models.OneToOneField(Job, on_delete=models.CASCADE, related_name="forgetting_report")
    parent = models.ForeignKey("backbones.BackboneVersion", on_delete=models.PROTECT, related_name="+")
    backbone = models.ForeignKey("backbones.BackboneVersion", on_delete=models.PROTECT, related_name="+")
    rows = models.JSONField(default=list)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"forgetting report {self.pk} ({self.status})"
