"""A head version composed into one downloadable Keras model (backbone, branch and head), built once by a worker.

MLflow's client downloads a model version's artifacts; ModelHub keeps the parts apart, so a
worker composes them on first request (mlflow_api.work) and keeps the file as a blob. The
row is tracked work: claimed, beaten and finished by core.tracked_work.
"""

from django.db import models

from core.models import TrackedWork


class FullModelArtifact(TrackedWork):
    """The `.keras` file of one head version with its backbone (and branch) composed in front of it."""

    WAITING = ("queued",)
    WORKING = ("building",)

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        BUILDING = "building", "Building"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    head = models.OneToOneField("heads.HeadVersion", on_delete=models.CASCADE, related_name="full_model")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    blob = models.ForeignKey("artifacts.Blob", on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    # The MLmodel file served beside model.keras (YAML; written by the worker with what it built).
    mlmodel = models.TextField(blank=True)
    # The worker's check of the saved file against the parts: max abs diff, tolerance, probe rows.
    verification = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"full model of head version {self.head_id} ({self.status})"
