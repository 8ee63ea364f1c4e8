"""Assemblies: one SavedModel serving a backbone version and a set of approved heads."""

from django.db import models

from core.models import TrackedWork


class Assembly(TrackedWork):
    WAITING = ("queued",)
    WORKING = ("building", "verifying")

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        BUILDING = "building", "Building"
        VERIFYING = "verifying", "Verifying"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    team = models.ForeignKey("teams.Team", on_delete=models.CASCADE, related_name="assemblies")
    name = models.CharField(max_length=100, blank=True)
    backbone = models.ForeignKey("backbones.BackboneVersion", on_delete=models.PROTECT, related_name="assemblies")
    heads_key = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    blob = models.ForeignKey("artifacts.Blob", on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    saved_model_bytes = models.BigIntegerField(null=True, blank=True)
    manifest = models.JSONField(default=dict, blank=True)
    verification = models.JSONField(default=dict, blank=True)
    signatures = models.JSONField(default=list, blank=True)
    # One extra signature per task slug (opt-in: each costs ~62 KB of graph and ~0.4 s of build
    # on MobileNetV2). Assemblies built before this choice existed had them: the migration sets True.
    task_signatures = models.BooleanField(default=False)
    # Set when the heads were chosen by alias: {"alias": name, "heads": {task slug: head version id}}.
    resolved_from = models.JSONField(default=dict, blank=True)
    # When an assembly request was last answered with this row from an alias (new or existing):
    # an alias that moves back to earlier heads reuses the older row, which then is the newest
    # resolution (inference's default version and the bundle's version_labels order by it).
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["backbone", "heads_key", "task_signatures"], name="unique_assembly_contents"
            )
        ]

    def __str__(self) -> str:
        return self.name or f"assembly {self.pk}"


class AssemblyHead(models.Model):
    """A head of an assembly; `task_id` is its index in the SavedModel's task_id input."""

    assembly = models.ForeignKey(Assembly, on_delete=models.CASCADE, related_name="entries")
    task_id = models.PositiveIntegerField()
    head = models.ForeignKey("heads.HeadVersion", on_delete=models.PROTECT, related_name="assembly_entries")

    class Meta:
        ordering = ["task_id"]
        constraints = [models.UniqueConstraint(fields=["assembly", "task_id"], name="unique_assembly_task_id")]

    def __str__(self) -> str:
        return f"{self.assembly_id}:{self.task_id}"


class AssemblyExport(TrackedWork):
    """An assembly converted to another format (ONNX, LiteRT) by a worker, verified task by task.

    One per (assembly, format, quantization): asking again answers with this row, and a failed
    one is queued again (assemblies.services.assembly_export_create).
    """

    WAITING = ("queued",)
    WORKING = ("exporting",)

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        EXPORTING = "exporting", "Exporting"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    class Format(models.TextChoices):
        ONNX = "onnx", "ONNX"
        LITERT = "litert", "LiteRT"

    class Quantization(models.TextChoices):
        NONE = "none", "None (float32)"
        FLOAT16 = "float16", "float16 weights"
        DYNAMIC_INT8 = "dynamic_int8", "Dynamic int8"

    assembly = models.ForeignKey(Assembly, on_delete=models.CASCADE, related_name="exports")
    format = models.CharField(max_length=16, choices=Format.choices)
    quantization = models.CharField(max_length=16, choices=Quantization.choices, default=Quantization.NONE)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    # {"fraction": 0..1, "message": what the worker is doing}, written by the worker as it goes.
    progress = models.JSONField(default=dict, blank=True)
    # The verification report of modelhub.ml.export.export_assembly (per task max abs diff, argmax agreement).
    report = models.JSONField(default=dict, blank=True)
    size_bytes = models.BigIntegerField(null=True, blank=True)
    blob = models.ForeignKey("artifacts.Blob", on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    # The training dataset named in the request, whose argmax agreement the report gives. An id, not a
    # foreign key: training sits beside assemblies in the layers and is read through core.datasets.
    dataset_id = models.PositiveBigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["assembly", "format", "quantization"], name="unique_assembly_export")
        ]

    def __str__(self) -> str:
        return f"{self.format} export ({self.quantization}) of assembly {self.assembly_id}"

    @property
    def file_extension(self) -> str:
        """Return the exported file's extension: "onnx" or "tflite"."""
        return "onnx" if self.format == self.Format.ONNX else "tflite"


class Prediction(TrackedWork):
    """A trial call of an assembly, run by a worker (dashboard "try it"; not production serving)."""

    WAITING = ("queued",)
    WORKING = ("running",)

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    assembly = models.ForeignKey(Assembly, on_delete=models.CASCADE, related_name="predictions")
    task_id = models.PositiveIntegerField()
    inputs = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    outputs = models.JSONField(null=True, blank=True)
    # Which runtime answered: "onnxruntime" (the verified ONNX export) or "tensorflow" (the SavedModel).
    runtime = models.CharField(max_length=16, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"prediction {self.pk} on assembly {self.assembly_id}"
