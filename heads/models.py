"""Tasks, their immutable head versions, the review trail, comments and model imports."""

from django.conf import settings
from django.db import models

from core.models import TrackedWork


class Task(models.Model):
    """A prediction task of a team (e.g. 'sentiment'); its heads are versioned below."""

    team = models.ForeignKey("teams.Team", on_delete=models.CASCADE, related_name="tasks")
    slug = models.CharField(max_length=63)
    description = models.TextField(blank=True)
    labels = models.JSONField(default=list, blank=True)
    tags = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]
        constraints = [models.UniqueConstraint(fields=["team", "slug"], name="unique_task_slug")]

    def __str__(self) -> str:
        return self.slug


class HeadVersion(TrackedWork):
    """A head artifact bound to exactly one backbone version. Only approved ones ship."""

    WAITING = ("validating",)
    WORKING = ("validating",)
    LOST = "rejected"

    class Status(models.TextChoices):
        VALIDATING = "validating", "Validating"
        REJECTED = "rejected", "Rejected"
        DRAFT = "draft", "Draft"
        IN_REVIEW = "in_review", "In review"
        CHANGES_REQUESTED = "changes_requested", "Changes requested"
        APPROVED = "approved", "Approved"
        ARCHIVED = "archived", "Archived"

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    backbone = models.ForeignKey("backbones.BackboneVersion", on_delete=models.PROTECT, related_name="heads")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.VALIDATING)
    blob = models.ForeignKey("artifacts.Blob", on_delete=models.PROTECT, related_name="head_versions")
    source_blob = models.ForeignKey(
        "artifacts.Blob", on_delete=models.PROTECT, null=True, blank=True, related_name="head_sources"
    )
    branch_blob = models.ForeignKey(
        "artifacts.Blob",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="head_branches",
        help_text="The backbone layers this head owns above its branch point (a Keras model), or none.",
    )
    branch = models.JSONField(
        null=True,
        blank=True,
        help_text='{"after_layer": last shared backbone layer, "layers": [owned backbone layers], "params": n}',
    )
    filename = models.CharField(max_length=255, blank=True)
    description = models.TextField(blank=True)
    labels = models.JSONField(default=list, blank=True)
    output_width = models.PositiveIntegerField(null=True, blank=True)
    spec = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    origin = models.JSONField(default=dict, blank=True)
    dataset = models.ForeignKey(
        "training.Dataset",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="heads",
        help_text="The dataset it was trained on; its validation split measures forgetting.",
    )
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    # Provenance (four eyes): a carried copy keeps the original's created_by; these say who carried
    # it, from which version, and which job made it. heads.selectors.head_version_authors reads them.
    carried_from = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="carried_copies",
        help_text="The head version this one is a carried copy of (same artifact, another backbone version).",
    )
    carried_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Who carried it here (the job's requester, or the reviewer accepting a forgetting report).",
    )
    job = models.ForeignKey(
        "training.Job",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="head_versions",
        help_text="The job that made it (trained it, or carried it to a new backbone version).",
    )

    class Meta:
        ordering = ["task__slug", "-version"]
        constraints = [models.UniqueConstraint(fields=["task", "version"], name="unique_head_version")]

    def __str__(self) -> str:
        return f"{self.task.slug} v{self.version}"

    @property
    def team(self):
        return self.task.team


class HeadEvent(models.Model):
    """The audit trail: who did what to a head version, when, and the status change."""

    class Action(models.TextChoices):
        UPLOAD = "upload", "Uploaded"
        IMPORT = "import", "Imported"
        TRAINED = "trained", "Trained by a job"
        CARRY = "carry", "Carried to a new backbone version"
        VALIDATED = "validated", "Validated"
        REJECTED = "rejected", "Rejected by validation"
        SUBMIT = "submit", "Submitted for review"
        APPROVE = "approve", "Approved"
        REQUEST_CHANGES = "request_changes", "Changes requested"
        ARCHIVE = "archive", "Archived"
        COMMENT = "comment", "Commented"
        ADMIN_EDIT = "admin_edit", "Changed in the admin"

    head = models.ForeignKey(HeadVersion, on_delete=models.CASCADE, related_name="events")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    action = models.CharField(max_length=20, choices=Action.choices)
    old_status = models.CharField(max_length=20, blank=True)
    new_status = models.CharField(max_length=20, blank=True)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.action} on {self.head_id}"


class HeadComment(models.Model):
    head = models.ForeignKey(HeadVersion, on_delete=models.CASCADE, related_name="comments")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"comment {self.pk} on {self.head_id}"


class ModelImport(TrackedWork):
    """An all-or-nothing import of K full models that share one backbone."""

    WAITING = ("queued",)
    WORKING = ("running",)

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    team = models.ForeignKey("teams.Team", on_delete=models.CASCADE, related_name="imports")
    backbone_name = models.CharField(max_length=100)
    # Blank on creation means "the worker picks the deepest layer the models share"; the worker
    # then writes the chosen layer's name here.
    feature_layer = models.CharField(max_length=200, blank=True)
    # True: models whose top backbone layers differ from the reference keep them as a branch
    # (heads that own the top of the backbone); False: any difference fails the import.
    branches = models.BooleanField(default=False)
    # The least share of the backbone's parameters the trunk every model shares must hold.
    min_shared_fraction = models.FloatField(default=0.5)
    # {input name: shape of one probe row} for inputs of open (None) length; {} derives it from the model.
    probe_shape = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    report = models.JSONField(default=list, blank=True)
    # What the worker decided for the whole import: {"feature_layer", "reason", "verification"}.
    summary = models.JSONField(default=dict, blank=True)
    backbone = models.ForeignKey(
        "backbones.BackboneVersion", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"import {self.pk} ({self.status})"


class ModelImportFile(models.Model):
    model_import = models.ForeignKey(ModelImport, on_delete=models.CASCADE, related_name="files")
    position = models.PositiveIntegerField()
    filename = models.CharField(max_length=255)
    # The file's task; for a file with several outputs, the prefix of each output's task
    # (`<task_slug>-<output name>`) unless `output_tasks` names it.
    task_slug = models.CharField(max_length=63)
    # {output name: task slug} from the import's tasks mapping (files with several outputs).
    output_tasks = models.JSONField(default=dict, blank=True)
    blob = models.ForeignKey("artifacts.Blob", on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["position"]

    def __str__(self) -> str:
        return self.filename


class HeadWeights(models.Model):
    """A head artifact's Dense-chain weights, packed for fast assembly (modelhub.ml.head_weights).

    One row per head artifact (carried head versions share their blob, and so this row),
    written when the head is validated, imported or trained, or by the first assembly that
    needs it. `packed` is null when the head is not a chain of Dense layers: assemblies then
    load it with Keras. The row is derived data: it does not keep `source` from collection.
    """

    GC_DERIVED_FROM = "source"

    source = models.OneToOneField("artifacts.Blob", on_delete=models.CASCADE, related_name="head_weights")
    packed = models.ForeignKey("artifacts.Blob", on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    steps = models.JSONField(default=list, blank=True)
    input_width = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"weights of {self.source_id}" + ("" if self.packed_id else " (not a Dense chain)")


class HeadEvaluation(models.Model):
    """A head version's metrics on one dataset, measured through one backbone version by a job.

    The evaluate_head job writes it (training.work.evaluate_head). `outputs` holds the head's
    outputs on the evaluated rows (an .npz of float32 ``outputs`` [rows, width]), so two head
    versions evaluated on the same dataset can be compared row by row without a worker.
    """

    head = models.ForeignKey(HeadVersion, on_delete=models.CASCADE, related_name="evaluations")
    dataset = models.ForeignKey("training.Dataset", on_delete=models.CASCADE, related_name="head_evaluations")
    backbone = models.ForeignKey("backbones.BackboneVersion", on_delete=models.PROTECT, related_name="+")
    split = models.CharField(max_length=16, help_text="'validation' (x_val, y_val) or 'all' (x, y).")
    num_examples = models.PositiveIntegerField()
    metrics = models.JSONField(default=dict, blank=True)
    outputs = models.ForeignKey(
        "artifacts.Blob", on_delete=models.PROTECT, null=True, blank=True, related_name="head_evaluations"
    )
    num_output_rows = models.PositiveIntegerField(
        default=0, help_text="Rows kept in `outputs` (the first ones; capped by MODELHUB_EVALUATION_MAX_OUTPUT_VALUES)."
    )
    job = models.ForeignKey(
        "training.Job", on_delete=models.SET_NULL, null=True, blank=True, related_name="head_evaluations"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["head", "dataset"])]

    def __str__(self) -> str:
        return f"evaluation {self.pk} of head {self.head_id} on dataset {self.dataset_id}"
