"""Writes for datasets, training jobs and forgetting reports.

Jobs are checked cheaply here (shapes, statuses, label ranges) from stored metadata, so a job
that cannot work fails at once with a message saying what to change; the worker does the rest.
"""

import os

from django.contrib.auth.models import AbstractBaseUser
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone

from heads.models import HeadEvent, HeadVersion
from heads.services import check_task_slug, head_version_create, task_get_or_create
from modelhub.artifacts.services import blob_store_uploaded_file
from modelhub.backbones.models import BackboneVersion
from modelhub.core.errors import ConflictError, PermissionDeniedError, ValidationError
from modelhub.core.tracked_work import queue_on_commit
from modelhub.teams.models import Team
from modelhub.teams.selectors import membership_get
from training.models import Dataset, ForgettingReport, Job

DATASET_SUFFIXES = {".npz": Dataset.Format.NPZ, ".zip": Dataset.Format.IMAGES}


class JobCheckFailed(Exception):
    """A cheap pre-training check failed; the message says what to change."""


def dataset_upload(*, team: Team, user: AbstractBaseUser, name: str, file: UploadedFile) -> Dataset:
    """Store a dataset file and queue its validation by a worker."""
    suffix = os.path.splitext(file.name or "")[1].lower()
    if suffix not in DATASET_SUFFIXES:
        raise ValidationError(
            f"Expected a .npz (arrays x and y, optionally x_val, y_val, labels) or a .zip of class folders "
            f"of images; received '{os.path.basename(file.name or '')}'.",
            code="invalid_file_type",
        )
    if not name.strip():
        raise ValidationError("A dataset needs a name.")
    stored = blob_store_uploaded_file(file=file)
    with transaction.atomic():
        dataset = Dataset.objects.create(
            team=team,
            name=name.strip()[:100],
            format=DATASET_SUFFIXES[suffix],
            blob=stored.blob,
            filename=os.path.basename(file.name),
            created_by=user,
        )
        queue_on_commit("training.validate_dataset", dataset.pk)
    return dataset


# --- Cheap checks -------------------------------------------------------------------------


def _ready_backbone(team: Team, backbone_id) -> BackboneVersion:
    backbone = BackboneVersion.objects.filter(team=team, pk=backbone_id).first()
    if backbone is None:
        raise JobCheckFailed(f"Backbone version {backbone_id} is not in team '{team.slug}'. Pick one of its backbones.")
    if backbone.status != BackboneVersion.Status.READY:
        raise JobCheckFailed(f"{backbone.label} is '{backbone.status}'; pick a ready backbone version.")
    return backbone


def training_input_problem(backbone: BackboneVersion) -> str:
    """Return why jobs cannot train on this backbone's inputs, or "" when they can.

    Datasets hold one numeric array `x`, so jobs need a backbone with one numeric input.
    """
    inputs = (backbone.spec or {}).get("inputs") or []
    if len(inputs) > 1:
        names = ", ".join(f"'{spec.get('name')}'" for spec in inputs)
        return (
            f"{backbone.label} takes {len(inputs)} inputs ({names}); training jobs take one input array 'x'. "
            "Train heads for several-input backbones outside ModelHub and import or upload them."
        )
    if inputs and inputs[0].get("dtype") == "string":
        return (
            f"{backbone.label} takes text (a string input); training jobs take numeric arrays. Train heads for "
            "text backbones outside ModelHub and import or upload them, or upload a backbone that takes token ids."
        )
    return ""


def _ready_dataset(team: Team, dataset_id, backbone: BackboneVersion) -> Dataset:
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
    problem = training_input_problem(backbone)
    if problem:
        raise JobCheckFailed(problem)
    expected = backbone.spec.get("inputs", [{}])[0].get("shape")
    if dataset.format == Dataset.Format.NPZ and expected and list(dataset.input_shape or []) != list(expected):
        raise JobCheckFailed(
            f"Dataset '{dataset.name}' has inputs of shape {dataset.input_shape}, but {backbone.label} expects "
            f"{expected}. Reshape or resize the data to {expected}, or pick the matching backbone."
        )
    return dataset


def _check_head_spec(head: dict, dataset: Dataset) -> dict:
    kind = head.get("type", "dense")
    if kind not in ("dense", "mlp"):
        raise JobCheckFailed(
            f"Unknown head type {kind!r}; use {{'type': 'dense'}} or {{'type': 'mlp', 'hidden': [64]}}."
        )
    hidden = head.get("hidden", [64] if kind == "mlp" else [])
    if kind == "mlp" and (not isinstance(hidden, list) or not all(isinstance(h, int) and h > 0 for h in hidden)):
        raise JobCheckFailed(f"'hidden' must be a list of positive layer sizes, e.g. [64, 32]; got {hidden!r}.")
    dropout = float(head.get("dropout", 0.0))
    if not 0.0 <= dropout < 1.0:
        raise JobCheckFailed(f"'dropout' must be in [0, 1); got {dropout}.")
    default_units = dataset.num_classes if dataset.target == "classes" else 1
    units = int(head.get("units") or default_units)
    activation = head.get("activation") or ("softmax" if dataset.target == "classes" else "linear")
    if dataset.target == "classes" and head.get("units") and int(head["units"]) < dataset.num_classes:
        raise JobCheckFailed(
            f"Labels of dataset '{dataset.name}' range over {dataset.num_classes} classes "
            f"(0..{dataset.num_classes - 1}), but the head has {head['units']} units. "
            f"Use at least {dataset.num_classes} units or omit 'units'."
        )
    return {"type": kind, "hidden": hidden, "dropout": dropout, "units": units, "activation": activation}


def _check_params(team: Team, kind: str, params: dict) -> dict:
    """Return normalized params, or raise JobCheckFailed with what to change."""
    backbone = _ready_backbone(team, params.get("backbone"))
    normalized = dict(params, backbone=backbone.pk)
    if kind == Job.Kind.TRAIN_HEAD:
        check_task_slug(params.get("task", ""))
        dataset = _ready_dataset(team, params.get("dataset"), backbone)
        normalized["head"] = _check_head_spec(params.get("head") or {}, dataset)
    elif kind == Job.Kind.TRAIN_HEADS:
        tasks = params.get("tasks") or []
        if not tasks:
            raise JobCheckFailed("'tasks' is empty: give a list of {task, dataset, head, learning_rate}.")
        if params.get("mode", "joint") not in ("joint", "disjoint"):
            raise JobCheckFailed(f"'mode' must be 'joint' or 'disjoint'; got {params.get('mode')!r}.")
        entries, input_hashes = [], set()
        for entry in tasks:
            check_task_slug(entry.get("task", ""))
            dataset = _ready_dataset(team, entry.get("dataset"), backbone)
            input_hashes.add(dataset.x_sha256)
            entries.append(dict(entry, head=_check_head_spec(entry.get("head") or {}, dataset)))
        if len({e["task"] for e in entries}) != len(entries):
            raise JobCheckFailed("Each task may appear once in 'tasks'.")
        if len(input_hashes) != 1:
            raise JobCheckFailed(
                "All datasets of a train_heads job must share the same inputs x (each with its own labels y), "
                "because the heads train on one pass of backbone features. Use separate train_head jobs otherwise."
            )
        if params.get("mode", "joint") == "joint" and len({float(e.get("learning_rate", 1e-3)) for e in entries}) > 1:
            raise JobCheckFailed(
                "Joint mode uses one optimizer and one learning rate; use mode 'disjoint' for per-head rates."
            )
        normalized.update(tasks=entries, mode=params.get("mode", "joint"))
    elif kind == Job.Kind.FINE_TUNE:
        check_task_slug(params.get("task", ""))
        dataset = _ready_dataset(team, params.get("dataset"), backbone)
        normalized["head"] = _check_head_spec(params.get("head") or {}, dataset)
        weight_layers = [layer for layer in backbone.spec.get("layers", []) if layer.get("has_weights")]
        unfreeze = int(params.get("unfreeze_top", 0))
        if not 1 <= unfreeze <= len(weight_layers):
            raise JobCheckFailed(
                f"'unfreeze_top' must be between 1 and {len(weight_layers)} (the weight-bearing layers of "
                f"{backbone.label}); got {unfreeze}."
            )
    elif kind == Job.Kind.GROW_BACKBONE:
        layer_names = {layer["name"] for layer in backbone.spec.get("layers", [])}
        insert, widen = params.get("insert"), params.get("widen")
        if bool(insert) == bool(widen):
            raise JobCheckFailed("Give exactly one of 'insert' ({after_layer, kind}) or 'widen' ({layer, units}).")
        if insert:
            if insert.get("kind") not in ("dense", "conv", "residual"):
                raise JobCheckFailed(f"insert.kind must be 'dense', 'conv' or 'residual'; got {insert.get('kind')!r}.")
            if insert.get("after_layer") not in layer_names:
                raise JobCheckFailed(
                    f"Layer {insert.get('after_layer')!r} does not exist in {backbone.label}. "
                    f"Choose one of: {', '.join(sorted(layer_names))}."
                )
        if widen and widen.get("layer") not in layer_names:
            raise JobCheckFailed(
                f"Layer {widen.get('layer')!r} does not exist in {backbone.label}. Choose one of: "
                f"{', '.join(sorted(layer_names))}."
            )
        if params.get("train"):
            _ready_dataset(team, params["train"].get("dataset"), backbone)
    return normalized


def job_create(
    *, team: Team, user: AbstractBaseUser, kind: str, params: dict, retry_of: Job | None = None, attempts: int = 0
) -> Job:
    """Create a job; queue it, or fail it at once when a cheap check fails (nothing is queued)."""
    if kind not in Job.Kind.values:
        raise ValidationError(f"Unknown job kind {kind!r}; expected one of {', '.join(Job.Kind.values)}.")
    try:
        normalized = _check_params(team, kind, params)
        error = ""
    except (JobCheckFailed, ValidationError) as exc:
        normalized, error = params, str(getattr(exc, "message", exc))
    with transaction.atomic():
        job = Job.objects.create(
            team=team,
            kind=kind,
            params=normalized,
            created_by=user,
            retry_of=retry_of,
            attempts=attempts,
            status=Job.Status.FAILED if error else Job.Status.QUEUED,
            error=error,
            finished_at=timezone.now() if error else None,
        )
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
    is reported as such (probably out of memory).
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
        lost = locked.error.startswith("Worker lost")
        return job_create(
            team=locked.team,
            user=user,
            kind=locked.kind,
            params=locked.params,
            retry_of=locked,
            attempts=locked.attempts if lost else 0,
        )


# --- Forgetting reports -------------------------------------------------------------------


def report_decide(*, report: ForgettingReport, user: AbstractBaseUser, accept: bool) -> ForgettingReport:
    """Accept (carry the parent's approved heads to the new backbone) or reject a report."""
    membership = membership_get(user=user, team_slug=report.job.team.slug)
    if not membership.can_review:
        raise PermissionDeniedError("Only reviewers and admins can decide on a forgetting report.")
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
            )
    return locked


def heads_carry(
    *, parent: BackboneVersion, backbone: BackboneVersion, user, head_ids=None, reason: dict
) -> list[HeadVersion]:
    """Register the parent's approved heads (or the given ones) on the new backbone, approved."""
    heads = HeadVersion.objects.filter(backbone=parent, status=HeadVersion.Status.APPROVED).select_related("task")
    if head_ids is not None:
        heads = heads.filter(pk__in=head_ids)
    carried = []
    for head in heads:
        new = head_version_create(
            task=task_get_or_create(team=backbone.team, slug=head.task.slug),
            backbone=backbone,
            blob=head.blob,
            user=user,
            filename=head.filename,
            labels=head.labels,
            description=head.description,
            status=HeadVersion.Status.APPROVED,
            output_width=head.output_width,
            spec=head.spec,
            metrics=head.metrics,
            origin={**reason, "from_head_version": head.pk},
            action=HeadEvent.Action.CARRY,
            dataset=head.dataset,
        )
        carried.append(new)
    return carried
