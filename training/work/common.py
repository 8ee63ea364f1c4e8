"""Worker side: what the job runners share: load inputs, build heads, store results, finish.

A runner stores its artifacts (``head_artifact``, ``backbone_artifact``, ``branch_artifact``:
the model saved as a blob, described) and computes every report BEFORE it touches a result row. Then
``finish_succeeded`` writes the result rows and the job's ``succeeded`` status in ONE short
transaction: a crash leaves either both or neither, and no model is saved, evaluated or
uploaded while that transaction holds its locks (an unreferenced blob is at worst left for gc).
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction

from artifacts.models import Blob
from backbones.models import BackboneVersion
from backbones.services import backbone_version_create
from backbones.work.loading import load_backbone
from core.tracked_work import row_finish
from heads.models import HeadEvent, HeadVersion
from heads.services import head_version_create, task_get_or_create
from heads.work.model_files import head_output_width, save_head_as_blob, save_model_as_blob
from modelhub.ml.errors import TrainingCancelled
from training.models import Dataset, Job
from training.specs import HeadSpec
from training.work.dataset_zips import DatasetError
from training.work.datasets import dataset_arrays
from training.work.inputs import backbone_inputs


class JobLost(Exception):  # noqa: N818 - a signal: the row is no longer this worker's
    """The job row is no longer this worker's running job (reaped as lost): register nothing."""


def feature_cache_dir() -> Path:
    """Return where backbone features are cached (per backbone fingerprint and input sha256)."""
    return Path(settings.MODELHUB_HOME) / "cache" / "features"


# --- Inputs -------------------------------------------------------------------------------


def load_frozen_backbone(version_id: int) -> tuple[BackboneVersion, object]:
    """Return a backbone version and its model, every layer frozen."""
    from modelhub.ml.freeze import freeze_backbone

    version = BackboneVersion.objects.select_related("blob", "team").get(pk=version_id)
    model = load_backbone(version)
    freeze_backbone(model)
    return version, model


def load_dataset(dataset_id: int, backbone_version: BackboneVersion) -> tuple[Dataset, dict]:
    """Return a dataset row and its arrays, x (and x_val) as the backbone takes them.

    Each input is paired with its backbone input (by name, or the one unnamed input ``x`` with a
    one-input backbone), reshaped, padded and cast to its dtype (training.work.inputs): x is one
    array for a one-input backbone, else ``{input name: array}``.
    """
    dataset = Dataset.objects.select_related("blob").get(pk=dataset_id)
    specs = backbone_version.spec["inputs"]
    data = dataset_arrays(dataset, input_shape=specs[0]["shape"])
    for key in ("x", "x_val"):
        if key in data:
            data[key] = backbone_inputs(data[key], specs)
    return dataset, data


def validation_data(data: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """Return (x_val, y_val) when the dataset has a validation split."""
    return (data["x_val"], data["y_val"]) if "x_val" in data else None


def sized_head(head: HeadSpec, dataset: Dataset, y: np.ndarray) -> HeadSpec:
    """Return the head sized for the dataset (job_create already did; jobs stored before did not).

    Raises DatasetError when the labels reach past the head's outputs.
    """
    head = head.for_dataset(target=dataset.target, num_classes=dataset.num_classes)
    if dataset.target == "classes" and int(np.max(y)) >= head.units:
        raise DatasetError(
            f"Labels reach {int(np.max(y))} but the head has {head.units} outputs; use at least "
            f"{int(np.max(y)) + 1} units."
        )
    return head


def build_head(head: HeadSpec, backbone, *, name: str, seed: int | None):
    """Build the Keras head a spec describes, on the backbone's features."""
    from modelhub.ml.train.model import build_head as ml_build_head
    from modelhub.ml.train.model import feature_shape

    return ml_build_head(
        feature_shape(backbone),
        units=head.units,
        kind=head.type,
        activation=head.activation,
        hidden_units=head.hidden,
        dropout=head.dropout,
        name=name,
        seed=seed,
    )


# --- Artifacts (stored before any result row) -----------------------------------------------


@dataclass(frozen=True)
class StoredModel:
    """A model saved as a blob, with what its row needs: its description (and fingerprint)."""

    blob: Blob
    spec: dict
    output_width: int | None = None
    weights_sha256: str = ""


def head_artifact(head, *, name: str) -> StoredModel:
    """Save a trained head as a blob and describe it (no row yet)."""
    from modelhub.ml.inspect import inspect_model

    return StoredModel(
        blob=save_head_as_blob(head, name=name), spec=inspect_model(head), output_width=head_output_width(head)
    )


def backbone_artifact(model, *, name: str) -> StoredModel:
    """Save a new backbone as a blob and fingerprint its weights (no row yet)."""
    from modelhub.ml.inspect import inspect_model, weights_fingerprint

    fingerprint = weights_fingerprint(model)
    return StoredModel(
        blob=save_model_as_blob(model, name=name),
        spec=dict(inspect_model(model), weights_sha256=fingerprint),
        weights_sha256=fingerprint,
    )


def branch_artifact(branch, *, name: str) -> Blob:
    """Save the backbone layers a head owns (its branch, input ``trunk``) as a blob (no row yet)."""
    return save_model_as_blob(branch, name=name)


# --- Result rows (inside finish_succeeded) -----------------------------------------------------


def register_head(
    job: Job,
    *,
    task_slug: str,
    stored: StoredModel,
    backbone_version: BackboneVersion,
    dataset: Dataset,
    metrics: dict,
    branch_blob: Blob | None = None,
    branch: dict | None = None,
) -> HeadVersion:
    """Create the draft head version a job trained (rows only: the blobs are stored already).

    A head that owns the top of its backbone passes its branch blob and ``BranchInfo.as_dict()``.
    """
    labels = dataset.labels or []
    task = task_get_or_create(team=backbone_version.team, slug=task_slug, labels=labels)
    return head_version_create(
        task=task,
        backbone=backbone_version,
        blob=stored.blob,
        user=job.created_by,
        job=job,
        filename=f"{task_slug}.keras",
        labels=labels if len(labels) == stored.output_width else [],
        status=HeadVersion.Status.DRAFT,
        output_width=stored.output_width,
        spec=stored.spec,
        metrics={**metrics, "history": job.metrics},
        origin={"kind": "job", "job": job.pk, "job_kind": job.kind},
        action=HeadEvent.Action.TRAINED,
        dataset=dataset,
        branch_blob=branch_blob,
        branch=branch,
    )


def register_backbone(job: Job, *, stored: StoredModel, parent: BackboneVersion, origin: dict) -> BackboneVersion:
    """Create the ready backbone version (child of `parent`) a job made (rows only)."""
    return backbone_version_create(
        team=parent.team,
        user=job.created_by,
        name=parent.name,
        blob=stored.blob,
        filename=f"{parent.name}.keras",
        parent=parent,
        origin={**origin, "job": job.pk},
        status=BackboneVersion.Status.READY,
        spec=stored.spec,
        weights_sha256=stored.weights_sha256,
        description=f"Made by {job.kind} job {job.pk} from {parent.label}.",
    )


def finish_succeeded(job: Job, register: Callable[[], dict]) -> dict:
    """Write a job's result rows and its succeeded status in ONE short transaction; return the result.

    `register()` creates the rows (database writes only: save models and compute reports
    before) and returns the job's result. The job row is locked first: when it is no longer
    this worker's running job (the reaper failed it), nothing is registered (JobLost); when a
    cancel was requested meanwhile, the job is cancelled instead (TrainingCancelled).
    """
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=job.pk)
        if locked.status != Job.Status.RUNNING or locked.worker != job.worker:
            raise JobLost(f"Job {job.pk} is '{locked.status}' (worker {locked.worker!r}); its results are dropped.")
        if locked.cancel_requested:
            raise TrainingCancelled("Training was cancelled before its results were registered.")
        result = register()
        row_finish(job, status=Job.Status.SUCCEEDED, result=result)
    return result
