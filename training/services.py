"""Writes for datasets, training jobs and forgetting reports.

A job arrives as a typed spec (training.specs: malformed parameters never get this far). Here
it is checked cheaply against the database (shapes, statuses, label ranges) from stored
metadata, so a job that cannot work fails at once with a message saying what to change; the
worker does the rest.
"""

import dataclasses
import os

from django.contrib.auth.models import AbstractBaseUser
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone

from artifacts.services import blob_store_uploaded_file
from backbones.models import BackboneVersion
from core.errors import ConflictError, PermissionDeniedError, ValidationError
from core.tracked_work import queue_on_commit
from heads.models import HeadVersion
from heads.selectors import head_approved_list, head_versions_by_id, heads_carry_authors
from heads.services import check_not_author, heads_carry
from teams.models import Team
from teams.selectors import membership_get
from training.input_fit import describe_inputs, inputs_fit_problem
from training.models import Dataset, ForgettingReport, Job
from training.specs import (
    EvaluateHeadSpec,
    FineTuneSpec,
    GrowBackboneSpec,
    HeadSpec,
    JobSpec,
    JobSpecError,
    TrainHeadSpec,
    TrainHeadsSpec,
    describe_errors,
    job_spec_parse,
)
from training.specs.columns import columns_parse

DATASET_SUFFIXES = {
    ".npz": Dataset.Format.NPZ,
    ".zip": Dataset.Format.IMAGES,
    ".csv": Dataset.Format.CSV,
    ".jsonl": Dataset.Format.JSONL,
    ".ndjson": Dataset.Format.JSONL,
    ".parquet": Dataset.Format.PARQUET,
}
TABLE_FORMATS = (Dataset.Format.CSV, Dataset.Format.JSONL, Dataset.Format.PARQUET)


class JobCheckFailed(Exception):
    """A check against the database failed; the message says what to change (the job is stored failed)."""


def dataset_upload(
    *, team: Team, user: AbstractBaseUser, name: str, file: UploadedFile, columns: str | dict | None = None
) -> Dataset:
    """Store a dataset file and queue its validation by a worker.

    `columns` (JSON text or a dict) maps a table's columns to inputs, label and validation rows
    (training.specs.columns); a malformed mapping is refused here, before anything is stored,
    and columns the file lacks are found by the worker's validation.
    """
    suffix = os.path.splitext(file.name or "")[1].lower()
    if suffix not in DATASET_SUFFIXES:
        raise ValidationError(
            f"Expected a .npz (arrays x and y, optionally x_val, y_val, labels), a table (.csv, .jsonl, .ndjson, "
            f".parquet) or a .zip of class folders of images; received '{os.path.basename(file.name or '')}'.",
            code="invalid_file_type",
        )
    if not name.strip():
        raise ValidationError("A dataset needs a name.")
    mapping = columns_parse(columns)
    if mapping and DATASET_SUFFIXES[suffix] not in TABLE_FORMATS:
        raise ValidationError(
            f"'columns' maps the columns of a table (.csv, .jsonl, .ndjson, .parquet); '{suffix}' files have none. "
            "Leave 'columns' out."
        )
    stored = blob_store_uploaded_file(file=file)
    with transaction.atomic():
        dataset = Dataset.objects.create(
            team=team,
            name=name.strip()[:100],
            format=DATASET_SUFFIXES[suffix],
            blob=stored.blob,
            filename=os.path.basename(file.name),
            columns=mapping,
            created_by=user,
        )
        queue_on_commit("training.validate_dataset", dataset.pk)
    return dataset


# --- Checks against the database -----------------------------------------------------------


def backbone_input_shape(backbone: BackboneVersion) -> list | None:
    """Return the shape of the backbone's first input (without batch), or None when unknown."""
    inputs = (backbone.spec or {}).get("inputs") or [{}]
    shape = inputs[0].get("shape")
    return list(shape) if shape is not None else None


def training_input_problem(backbone: BackboneVersion) -> str:
    """Return why jobs cannot train on this backbone's inputs, or "" when they can.

    Any number of inputs of any kind (text, token ids, numbers, images) can be trained on, as long
    as the backbone's description says what each input is (its name, per-row shape and dtype).
    """
    inputs = (backbone.spec or {}).get("inputs") or []
    if not inputs:
        return f"{backbone.label} declares no inputs, so no dataset can be checked against it."
    unknown = [str(spec.get("name")) for spec in inputs if spec.get("shape") is None or not spec.get("dtype")]
    if unknown:
        return (
            f"{backbone.label} does not declare the shape and dtype of its input(s) {', '.join(unknown)}, so no "
            "dataset can be checked against it. Upload the backbone again so a worker describes it."
        )
    return ""


def dataset_inputs(dataset: Dataset) -> list[dict]:
    """Return the dataset's inputs ({name, kind, shape, dtype} each); rows stored before they were recorded
    have one numeric input "x" of shape `input_shape`."""
    if dataset.inputs:
        return list(dataset.inputs)
    if dataset.format == Dataset.Format.IMAGES or dataset.input_shape is None:
        return []
    return [{"name": "x", "kind": "number", "shape": list(dataset.input_shape), "dtype": "float32"}]


def dataset_fit_problem(dataset: Dataset, backbone: BackboneVersion) -> str:
    """Return why `dataset` cannot train on `backbone`, or "" when it fits.

    The one rule (training.input_fit, which the worker follows too): the job forms offer only pairs
    that fit, and job_create fails a job whose pair does not. The dataset's `inputs` (names, kinds,
    shapes) must feed the backbone's `spec["inputs"]`: by name, or one unnamed input `x` for a
    one-input backbone; text only a string input; token ids padded up to a fixed length, never cut.
    An image dataset fits a backbone taking images of a fixed size with 1 (grey) or 3 (RGB) channels
    (the worker resizes each image to it). The message names both sides.
    """
    problem = training_input_problem(backbone)
    if problem:
        return problem
    backbone_inputs = backbone.spec["inputs"]
    if dataset.format == Dataset.Format.IMAGES:
        expected = list(backbone_inputs[0]["shape"])
        if len(backbone_inputs) != 1 or len(expected) != 3 or None in expected[:2] or expected[2] not in (1, 3):
            return (
                f"Dataset '{dataset.name}' holds images, but {backbone.label} takes "
                f"{describe_inputs(backbone_inputs)}. Image datasets need a backbone taking one input of "
                "(height, width, 1 or 3 channels); pick one, or upload the data as an .npz of arrays shaped like "
                "the backbone input."
            )
        return ""
    inputs = dataset_inputs(dataset)
    problem = inputs_fit_problem(inputs, backbone_inputs)
    if problem:
        return (
            f"Dataset '{dataset.name}' has inputs {describe_inputs(inputs)}; {backbone.label} takes "
            f"{describe_inputs(backbone_inputs)}. {problem}"
        )
    return ""


def _ready_backbone(team: Team, backbone_id: int) -> BackboneVersion:
    backbone = BackboneVersion.objects.filter(team=team, pk=backbone_id).first()
    if backbone is None:
        raise JobCheckFailed(f"Backbone version {backbone_id} is not in team '{team.slug}'. Pick one of its backbones.")
    if backbone.status != BackboneVersion.Status.READY:
        raise JobCheckFailed(f"{backbone.label} is '{backbone.status}'; pick a ready backbone version.")
    return backbone


def _ready_dataset(team: Team, dataset_id: int, backbone: BackboneVersion) -> Dataset:
    dataset = Dataset.objects.filter(team=team, pk=dataset_id).first()
    if dataset is None:
        raise JobCheckFailed(f"Dataset {dataset_id} is not in team '{team.slug}'. Upload it first.")
    if dataset.status != Dataset.Status.READY:
        raise JobCheckFailed(
            f"Dataset '{dataset.name}' ({dataset.pk}) is '{dataset.status}'"
            + (f": {dataset.error}" if dataset.error else "")
            + ". Use a ready dataset."
        )
    if not dataset.num_examples:
        raise JobCheckFailed(f"Dataset '{dataset.name}' has no examples. Upload one with data.")
    problem = dataset_fit_problem(dataset, backbone)
    if problem:
        raise JobCheckFailed(problem)
    return dataset


def _head_for(head: HeadSpec, dataset: Dataset) -> HeadSpec:
    """Fill the head's units and activation from the dataset; refuse too few units for its classes."""
    if dataset.target == "classes" and head.units is not None and head.units < (dataset.num_classes or 0):
        raise JobCheckFailed(
            f"Labels of dataset '{dataset.name}' range over {dataset.num_classes} classes "
            f"(0..{dataset.num_classes - 1}), but the head has {head.units} units. "
            f"Use at least {dataset.num_classes} units or omit 'units'."
        )
    return head.for_dataset(target=dataset.target, num_classes=dataset.num_classes)


def _layer_names(backbone: BackboneVersion) -> set[str]:
    return {layer["name"] for layer in (backbone.spec or {}).get("layers", [])}


def _check_layer(backbone: BackboneVersion, name: str) -> None:
    names = _layer_names(backbone)
    if name not in names:
        raise JobCheckFailed(
            f"Layer {name!r} does not exist in {backbone.label}. Choose one of: {', '.join(sorted(names))}."
        )


def _check_probe_shape(backbone: BackboneVersion, probe_shape: dict[str, list[int]]) -> None:
    """Each input ``probe_shape`` names is the backbone's, with as many dims, its fixed ones as declared."""
    declared = {spec["name"]: list(spec["shape"]) for spec in backbone.spec.get("inputs", [])}
    for name, dims in probe_shape.items():
        want = declared.get(name)
        if want is None or len(want) != len(dims) or any(w not in (None, d) for w, d in zip(want, dims, strict=True)):
            takes = ", ".join(f"{input_name} {shape}" for input_name, shape in declared.items())
            raise JobCheckFailed(
                f"probe_shape gives input {name!r} the rows {dims}, but {backbone.label} takes {takes} (None: any "
                "length). Name its inputs, with a length for each None and the fixed dimensions as declared."
            )


EVALUABLE_HEAD_STATUSES = (
    HeadVersion.Status.DRAFT,
    HeadVersion.Status.IN_REVIEW,
    HeadVersion.Status.CHANGES_REQUESTED,
    HeadVersion.Status.APPROVED,
    HeadVersion.Status.ARCHIVED,
)


def _evaluated_head_and_dataset(team: Team, spec: EvaluateHeadSpec) -> tuple[HeadVersion, Dataset]:
    """Check an evaluate_head job: a validated head of the team, a ready dataset fitting it.

    The dataset's inputs must fit the head's backbone, and its class ids the head's outputs.
    """
    head = head_versions_by_id(ids=[spec.head], team=team).select_related("backbone").first()
    if head is None:
        raise JobCheckFailed(f"Head version {spec.head} is not in team '{team.slug}'. Pick one of its heads.")
    if head.status not in EVALUABLE_HEAD_STATUSES:
        raise JobCheckFailed(
            f"Head '{head.task.slug}' v{head.version} is '{head.status}'; only validated head versions can be "
            "evaluated. Wait for validation, or upload a fixed version."
        )
    backbone = _ready_backbone(team, head.backbone_id)
    dataset = _ready_dataset(team, spec.dataset, backbone)
    width = head.output_width
    if dataset.target == "classes" and width is not None and (dataset.num_classes or 0) > width:
        raise JobCheckFailed(
            f"Labels of dataset '{dataset.name}' range over {dataset.num_classes} classes "
            f"(0..{dataset.num_classes - 1}), but head '{head.task.slug}' v{head.version} has {width} outputs. "
            f"Evaluate it on a dataset with at most {width} classes."
        )
    # Value targets: the row width of y is not stored; the worker checks it against the outputs.
    return head, dataset


def head_evaluate(*, head: HeadVersion, dataset_id: int, user: AbstractBaseUser, batch_size: int = 64) -> Job:
    """Queue an evaluate_head job: the head's metrics on a dataset, stored as a HeadEvaluation.

    Refuses (400, saying what to change) a head that is not validated or a dataset that is not
    ready, whose inputs do not fit the head's backbone, or whose labels do not fit its outputs;
    nothing is stored then.
    """
    team = head.task.team
    membership_get(user=user, team_slug=team.slug)
    spec = EvaluateHeadSpec(head=head.pk, dataset=dataset_id, batch_size=batch_size)
    try:
        _evaluated_head_and_dataset(team, spec)
    except JobCheckFailed as exc:
        raise ValidationError(str(exc), code="evaluation_refused") from None
    return job_create(team=team, user=user, spec=spec)


def job_check(*, team: Team, spec: JobSpec) -> JobSpec:
    """Check a job's spec against the database; return it completed (heads sized from their datasets).

    Raises JobCheckFailed saying what to change when the backbone or a dataset is missing, not
    ready or does not fit, labels outgrow the head, or a named layer does not exist.
    """
    if isinstance(spec, EvaluateHeadSpec):
        _evaluated_head_and_dataset(team, spec)
        return spec
    backbone = _ready_backbone(team, spec.backbone)
    if isinstance(spec, TrainHeadSpec | FineTuneSpec):
        dataset = _ready_dataset(team, spec.dataset, backbone)
        if isinstance(spec, TrainHeadSpec) and spec.early_stopping and not dataset.num_validation:
            raise JobCheckFailed(
                f"Early stopping watches the validation loss, but dataset '{dataset.name}' has no validation "
                "split. Upload it with x_val and y_val, or leave 'early_stopping' out."
            )
        if isinstance(spec, FineTuneSpec):
            weight_layers = [layer for layer in backbone.spec.get("layers", []) if layer.get("has_weights")]
            if spec.unfreeze_top > len(weight_layers):
                raise JobCheckFailed(
                    f"'unfreeze_top' must be between 1 and {len(weight_layers)} (the weight-bearing layers of "
                    f"{backbone.label}); got {spec.unfreeze_top}."
                )
        return dataclasses.replace(spec, head=_head_for(spec.head, dataset))
    if isinstance(spec, TrainHeadsSpec):
        entries, input_hashes = [], set()
        for entry in spec.tasks:
            dataset = _ready_dataset(team, entry.dataset, backbone)
            input_hashes.add(dataset.x_sha256)
            entries.append(dataclasses.replace(entry, head=_head_for(entry.head, dataset)))
        if len(input_hashes) != 1:
            raise JobCheckFailed(
                "All datasets of a train_heads job must share the same inputs x (each with its own labels y), "
                "because the heads train on one pass of backbone features. Use separate train_head jobs otherwise."
            )
        return dataclasses.replace(spec, tasks=tuple(entries))
    if isinstance(spec, GrowBackboneSpec):
        _check_layer(backbone, spec.insert.after_layer if spec.insert else spec.widen.layer)
        _check_probe_shape(backbone, spec.probe_shape or {})
        if spec.train:
            dataset = _ready_dataset(team, spec.train.dataset, backbone)
            if dataset.target != "classes":
                raise JobCheckFailed(
                    f"Training a grown backbone needs a classification dataset (integer labels); "
                    f"'{dataset.name}' holds values."
                )
        return spec
    raise TypeError(f"job_check has no rules for {type(spec).__name__}")


def job_create(
    *,
    team: Team,
    user: AbstractBaseUser | None,
    spec: JobSpec,
    retry_of: Job | None = None,
    attempts: int = 0,
    retried_by: AbstractBaseUser | None = None,
) -> Job:
    """Create a job from its spec; queue it, or fail it at once when a check against the database fails.

    The spec is already valid (job_spec_parse); a job that cannot work because of the database
    (dataset not ready, shapes that do not fit...) is stored failed with what to change, and
    nothing is queued. `user` is the requester (for a retry: the original job's requester);
    `retried_by` the member who retried it.
    """
    try:
        spec = job_check(team=team, spec=spec)
        error = ""
    except JobCheckFailed as exc:
        error = str(exc)
    with transaction.atomic():
        job = Job(
            team=team,
            kind=spec.kind,
            params=spec.to_params(),
            created_by=user,
            retry_of=retry_of,
            retried_by=retried_by,
            attempts=attempts,
            status=Job.Status.FAILED if error else Job.Status.QUEUED,
            error=error,
            finished_at=timezone.now() if error else None,
        )
        job.full_clean()
        job.save()
        if not error:
            queue_on_commit("training.run_job", job.pk)
    return job


def job_cancel(*, job: Job, user: AbstractBaseUser) -> Job:
    """Ask a job to stop at its next batch (a queued job is cancelled at once)."""
    membership_get(user=user, team_slug=job.team.slug)
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=job.pk)
        if locked.is_finished:
            raise ConflictError(
                f"Job {job.pk} is already '{locked.status}'; only queued or running jobs can be cancelled.",
                detail={"current_status": locked.status},
            )
        locked.cancel_requested = True
        if locked.status == Job.Status.QUEUED:
            locked.status, locked.finished_at = Job.Status.CANCELLED, timezone.now()
            locked.error = "Cancelled before it started."
        locked.save(update_fields=["cancel_requested", "status", "finished_at", "error"])
    return locked


def job_retry(*, job: Job, user: AbstractBaseUser) -> Job:
    """Queue a new job with the same parameters as a failed or cancelled one (once per job).

    The original row is locked, so two concurrent retries make one job; the second answers 409
    naming it. A retry of work that killed its worker keeps counting attempts, so a second loss
    is reported as such (probably out of memory). The new job keeps the original requester as
    ``created_by`` (four eyes: the heads it makes stay theirs) and records `user` as ``retried_by``.
    """
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=job.pk)
        if locked.status not in (Job.Status.FAILED, Job.Status.CANCELLED):
            raise ConflictError(
                f"Job {job.pk} is '{locked.status}'; only failed or cancelled jobs can be retried.",
                detail={"current_status": locked.status},
            )
        existing = locked.retries.order_by("pk").first()
        if existing is not None:
            raise ConflictError(
                f"Job {job.pk} was already retried as job {existing.pk} ('{existing.status}'). Follow that one, "
                "or retry it once it has finished.",
                detail={"retry": existing.pk, "current_status": locked.status},
            )
        try:
            spec = job_spec_parse(locked.kind, locked.params)
        except JobSpecError as exc:
            raise ValidationError(
                f"Job {job.pk} cannot be retried: its stored parameters are not valid ({describe_errors(exc.errors)}). "
                "Start a new job with corrected parameters.",
                detail=exc.errors,
            ) from None
        lost = locked.error.startswith("Worker lost")
        return job_create(
            team=locked.team,
            user=locked.created_by,
            retried_by=user,
            spec=spec,
            retry_of=locked,
            attempts=locked.attempts if lost else 0,
        )


# --- Forgetting reports -------------------------------------------------------------------


def report_carried_heads(report: ForgettingReport) -> list[HeadVersion]:
    """Return the parent's approved head versions that accepting `report` carries."""
    head_ids = [row["head_version"] for row in report.rows]
    return list(
        head_approved_list(backbone=report.parent)
        .filter(pk__in=head_ids)
        .select_related("job", "carried_from")
        .order_by("pk")
    )


def report_decide(*, report: ForgettingReport, user: AbstractBaseUser, accept: bool) -> ForgettingReport:
    """Accept (carry the parent's approved heads to the new backbone) or reject a report.

    Accepting approves the carried copies at once, so it refuses (403) every author of them by
    provenance: whoever requested or retried the job, and the authors of the heads it carries
    (heads.selectors.heads_carry_authors). Anyone may reject.
    """
    membership = membership_get(user=user, team_slug=report.job.team.slug)
    if not membership.can_review:
        raise PermissionDeniedError("Only reviewers and admins can decide on a forgetting report.")
    if accept:
        authors = heads_carry_authors(heads=report_carried_heads(report), job=report.job)
        check_not_author(
            user=user,
            authors=authors,
            doing="accept its forgetting report",
            must="accept it (as for approving your own head). You may reject it",
        )
    with transaction.atomic():
        locked = ForgettingReport.objects.select_for_update().get(pk=report.pk)
        if locked.status != ForgettingReport.Status.PENDING:
            raise ConflictError(
                f"Report {report.pk} is already '{locked.status}'.", detail={"current_status": locked.status}
            )
        locked.status = ForgettingReport.Status.ACCEPTED if accept else ForgettingReport.Status.REJECTED
        locked.reviewed_by, locked.reviewed_at = user, timezone.now()
        locked.save(update_fields=["status", "reviewed_by", "reviewed_at"])
        if accept:
            heads_carry(
                parent=locked.parent,
                backbone=locked.backbone,
                user=user,
                head_ids=[row["head_version"] for row in locked.rows],
                reason={"kind": "forgetting_report", "report": locked.pk},
                job=locked.job,
            )
    return locked
