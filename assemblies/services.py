"""Writes of assemblies: validate the choice of heads, dedupe, queue the build; queue exports and trial predictions.

A trial prediction's inputs are checked in the web process (assemblies.inputs, NumPy only); a
request waits for the worker's answer a bounded time (prediction_wait), after that the
prediction is polled by id, so slow predictions never hold web threads for long.
"""

import hashlib
import time

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from assemblies.inputs import SINGLE_INPUT_NAME, TASK_ID_NAME, coerce_inputs, resolve_task
from assemblies.models import Assembly, AssemblyExport, AssemblyHead, Prediction
from assemblies.specs import ExportSpec
from backbones.models import BackboneVersion
from backbones.selectors import backbone_get
from core.datasets import dataset_reader
from core.errors import ConflictError, ValidationError
from core.tracked_work import queue_on_commit
from heads.models import HeadVersion
from heads.selectors import head_approved_list, head_latest_approved_list, head_versions_by_id, heads_in_task_order
from releases.selectors import alias_heads_resolve
from teams.models import Team


def heads_key(head_ids: list[int]) -> str:
    """Identify a set of heads independently of its order."""
    return hashlib.sha256(",".join(str(i) for i in sorted(head_ids)).encode()).hexdigest()


def _choose_heads(*, backbone: BackboneVersion, head_ids: list[int] | None) -> list[HeadVersion]:
    if head_ids is None:
        heads = list(head_latest_approved_list(heads=head_approved_list(backbone=backbone)))
        if not heads:
            raise ValidationError(
                f"{backbone.label} has no approved heads. Approve heads on it first, or pass 'heads'."
            )
        return heads
    if not head_ids:
        raise ValidationError("'heads' is empty: give at least one approved head version id, or omit it.")
    found = {h.pk: h for h in head_versions_by_id(ids=head_ids, team=backbone.team)}
    problems = {}
    for head_id in head_ids:
        head = found.get(head_id)
        if head is None:
            problems[head_id] = "not found in this team"
        elif head.backbone_id != backbone.pk:
            problems[head_id] = f"is bound to backbone version {head.backbone_id}, not {backbone.pk}"
        elif head.status != HeadVersion.Status.APPROVED:
            problems[head_id] = f"is '{head.status}', only approved heads can be assembled"
    if problems:
        listed = "; ".join(f"{k} {v}" for k, v in problems.items())
        raise ValidationError(f"These heads cannot be assembled: {listed}.", detail={"heads": problems})
    heads = [found[i] for i in dict.fromkeys(head_ids)]
    slugs = [h.task.slug for h in heads]
    duplicated = sorted({s for s in slugs if slugs.count(s) > 1})
    if duplicated:
        raise ValidationError(f"Pick one version per task; several versions given for {duplicated}.")
    return heads


def assembly_create(
    *,
    team: Team,
    user: AbstractBaseUser,
    backbone_id: int,
    head_ids: list[int] | None,
    name: str = "",
    task_signatures: bool = False,
    alias: str | None = None,
) -> tuple[Assembly, bool]:
    """Create (or find) the assembly of these heads on this backbone; return (assembly, existed).

    The same heads with and without per-task signatures are two assemblies (two SavedModels).
    With `alias` (instead of `head_ids`), each task's head that alias points to on the backbone
    is taken, and the assembly records the alias and the versions it resolved to.
    """
    backbone = backbone_get(user=user, pk=backbone_id)
    if backbone.team_id != team.pk:
        raise ValidationError(
            f"Backbone version {backbone_id} belongs to team '{backbone.team.slug}', not '{team.slug}'."
        )
    if backbone.status != BackboneVersion.Status.READY:
        raise ValidationError(f"{backbone.label} is '{backbone.status}', expected 'ready'.")
    if alias is not None and head_ids is not None:
        message = "Give either 'heads' or 'alias', not both."
        raise ValidationError(message, detail={"alias": [message]})
    if alias is not None:
        heads = heads_in_task_order(alias_heads_resolve(backbone=backbone, name=alias))
        resolved_from = {"alias": alias, "heads": {head.task.slug: head.pk for head in heads}}
    else:
        heads = heads_in_task_order(_choose_heads(backbone=backbone, head_ids=head_ids))
        resolved_from = {}
    key = heads_key([h.pk for h in heads])
    with transaction.atomic():
        # Locked, so that concurrent requests re-queue a failed build once: a second message for a
        # row already building would otherwise be taken for a lost worker.
        existing = (
            Assembly.objects.select_for_update()
            .filter(backbone=backbone, heads_key=key, task_signatures=task_signatures)
            .first()
        )
        if existing is not None:
            fields = []
            if resolved_from:
                # The same heads asked for by an alias: record the latest alias that resolved to them,
                # and when (an alias moved back to earlier heads makes this older row the newest).
                existing.resolved_from, existing.resolved_at = resolved_from, timezone.now()
                fields += ["resolved_from", "resolved_at"]
            if existing.status == Assembly.Status.FAILED:
                existing.status, existing.error = Assembly.Status.QUEUED, ""
                fields += ["status", "error"]
                queue_on_commit("assemblies.build", existing.pk)
            if fields:
                existing.save(update_fields=fields)
            return existing, True
    try:
        with transaction.atomic():
            assembly = Assembly.objects.create(
                team=team,
                backbone=backbone,
                heads_key=key,
                name=name,
                created_by=user,
                task_signatures=task_signatures,
                resolved_from=resolved_from,
                resolved_at=timezone.now() if resolved_from else None,
            )
            AssemblyHead.objects.bulk_create(
                [AssemblyHead(assembly=assembly, task_id=index, head=head) for index, head in enumerate(heads)]
            )
            queue_on_commit("assemblies.build", assembly.pk)
    except IntegrityError:
        return Assembly.objects.get(backbone=backbone, heads_key=key, task_signatures=task_signatures), True
    return assembly, False


# --- Exports: queued here, built and verified by a worker (assemblies.work.exporting) ---


def assembly_export_create(
    *, assembly: Assembly, user: AbstractBaseUser, spec: ExportSpec
) -> tuple[AssemblyExport, bool]:
    """Queue the export of a ready assembly (or find it); return (export, existed).

    The same assembly, format and quantization answer with the existing export; a failed one
    is queued again (the error is cleared), as a failed assembly is when it is requested again.
    A dataset named in the spec must be in the assembly's team, ready, and fit its backbone
    (training's rule, through core.datasets), else ValidationError naming why. Naming another
    dataset than a finished export's queues it again with that one (a running one: ConflictError).
    """
    if assembly.status != Assembly.Status.READY:
        fix = (
            "Build it again (POST /api/assemblies/ with the same heads) and export once it is ready."
            if assembly.status == Assembly.Status.FAILED
            else f"Wait until it is ready (GET /api/assemblies/{assembly.pk}/), then ask again."
        )
        raise ConflictError(
            f"Assembly {assembly.pk} is '{assembly.status}'; only a ready (built and verified) assembly can be "
            f"exported. {fix}",
            detail={"current_status": assembly.status},
        )
    if spec.dataset is not None:
        problem = dataset_reader().fit_problem(
            dataset_id=spec.dataset, team_id=assembly.team_id, backbone_id=assembly.backbone_id
        )
        if problem:
            raise ValidationError(f"Invalid export request: dataset: {problem}", detail={"dataset": [problem]})
    fields = {"assembly": assembly, "format": spec.format, "quantization": spec.quantization}
    with transaction.atomic():
        # Locked, so that concurrent requests re-queue a failed export once.
        existing = AssemblyExport.objects.select_for_update().filter(**fields).first()
        if existing is not None:
            other_dataset = spec.dataset is not None and spec.dataset != existing.dataset_id
            if other_dataset and existing.status not in (AssemblyExport.Status.READY, AssemblyExport.Status.FAILED):
                raise ConflictError(
                    f"Export {existing.pk} ({spec.format}, {spec.quantization}) is '{existing.status}' with "
                    f"dataset {existing.dataset_id}; ask for dataset {spec.dataset} once it is ready or failed.",
                    detail={"current_status": existing.status},
                )
            if existing.status == AssemblyExport.Status.FAILED or other_dataset:
                existing.status, existing.error, existing.progress = AssemblyExport.Status.QUEUED, "", {}
                existing.dataset_id = spec.dataset if spec.dataset is not None else existing.dataset_id
                existing.save(update_fields=["status", "error", "progress", "dataset_id"])
                queue_on_commit("assemblies.export", existing.pk)
            return existing, True
    try:
        with transaction.atomic():
            export = AssemblyExport(**fields, dataset_id=spec.dataset, created_by=user)
            export.full_clean(validate_constraints=False)
            export.save()
            queue_on_commit("assemblies.export", export.pk)
    except IntegrityError:
        return AssemblyExport.objects.get(**fields), True
    return export, False


# --- Trial predictions: checked here, computed by a worker (assemblies.work.predicting) ---

# POST /api/assemblies/{id}/predict/ waits this long for the answer unless asked otherwise ("wait"),
# at most MAX_WAIT_SECONDS (and never longer than the MODELHUB_PREDICT_MAX_WAIT setting), then answers 202.
DEFAULT_WAIT_SECONDS = 5.0
MAX_WAIT_SECONDS = 30.0
FIRST_POLL_SECONDS = 0.05
MAX_POLL_SECONDS = 0.5
FINISHED_STATUSES = (Prediction.Status.SUCCEEDED, Prediction.Status.FAILED)


def prediction_create(
    *, assembly: Assembly, user: AbstractBaseUser, task: str | None, task_id: int | None, inputs
) -> Prediction:
    """Check the inputs against the manifest, store a queued prediction and queue it for a worker."""
    if assembly.status != Assembly.Status.READY:
        raise ConflictError(f"Assembly {assembly.pk} is '{assembly.status}'; predictions need a ready assembly.")
    entry = resolve_task(assembly, task=task, task_id=task_id)
    rows = coerce_inputs(assembly, inputs)
    with transaction.atomic():
        prediction = Prediction.objects.create(
            assembly=assembly, task_id=entry["task_id"], inputs=rows, created_by=user
        )
        queue_on_commit("assemblies.predict", prediction.pk)
    return prediction


def prediction_batch_create(*, assembly: Assembly, user: AbstractBaseUser, task_ids: list[int], inputs) -> Prediction:
    """Store ONE queued prediction of a batch whose rows have their own tasks, and queue it for a worker.

    The worker runs it in one call, as serving_default takes a mixed batch: the stored inputs are
    ``{input name: rows, ..., "task_id": [one per row]}`` (one input is named "inputs"), and
    ``task_id`` is the first row's. A batch of one task is stored as prediction_create stores it.
    `task_ids` are checked against the manifest; `inputs` as prediction_create checks them.
    """
    if assembly.status != Assembly.Status.READY:
        raise ConflictError(f"Assembly {assembly.pk} is '{assembly.status}'; predictions need a ready assembly.")
    for task_id in dict.fromkeys(task_ids):
        resolve_task(assembly, task=None, task_id=task_id)
    rows = coerce_inputs(assembly, inputs)
    stored = rows if isinstance(rows, dict) else {SINGLE_INPUT_NAME: rows}
    num_rows = len(next(iter(stored.values())))
    if len(task_ids) != num_rows:
        raise ValidationError(f"The inputs hold {num_rows} row(s) but {len(task_ids)} task id(s) were given.")
    if len(set(task_ids)) > 1:
        rows = {**stored, TASK_ID_NAME: [int(task_id) for task_id in task_ids]}
    with transaction.atomic():
        prediction = Prediction.objects.create(
            assembly=assembly, task_id=int(task_ids[0]), inputs=rows, created_by=user
        )
        queue_on_commit("assemblies.predict", prediction.pk)
    return prediction


def prediction_is_finished(prediction: Prediction) -> bool:
    """Return whether a worker has answered (succeeded or failed)."""
    return prediction.status in FINISHED_STATUSES


def prediction_wait(*, prediction: Prediction, seconds: float) -> Prediction:
    """Wait at most `seconds` (capped by MODELHUB_PREDICT_MAX_WAIT) for a worker to finish the prediction.

    Reads only the row's status, first every 50 ms and then less often (up to every 0.5 s), so
    that a waiting request costs a few cheap queries a second. Return the row, refreshed once it
    finished or the time is up; its status may still be queued or running.
    """
    seconds = max(0.0, min(float(seconds), float(settings.MODELHUB_PREDICT_MAX_WAIT)))
    deadline = time.monotonic() + seconds
    interval = FIRST_POLL_SECONDS
    while True:
        status = Prediction.objects.filter(pk=prediction.pk).values_list("status", flat=True).first()
        left = deadline - time.monotonic()
        if status in FINISHED_STATUSES or left <= 0:
            break
        time.sleep(min(interval, left))
        interval = min(interval * 2, MAX_POLL_SECONDS)
    prediction.refresh_from_db()
    return prediction


def prediction_run_and_wait(
    *, assembly: Assembly, user: AbstractBaseUser, task: str | None, task_id: int | None, inputs, wait: float
) -> Prediction:
    """Queue a prediction for a worker and wait at most `wait` seconds for its answer.

    Return the prediction: finished (succeeded or failed) when the worker answered in time, else
    still queued or running, to be polled (GET /api/assemblies/{id}/predictions/{pid}/).
    """
    prediction = prediction_create(assembly=assembly, user=user, task=task, task_id=task_id, inputs=inputs)
    return prediction_wait(prediction=prediction, seconds=wait)
