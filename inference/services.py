"""Run a protocol's inference request as trial predictions of an assembly, and wait a bounded time.

OIP and TF Serving requests carry a task per row (``task_id`` or ``task`` slugs). The rows are
checked once against the manifest (assemblies.inputs) and queued as ONE trial prediction that
carries each row's task (assemblies.services.prediction_batch_create); a worker runs it in one
call of serving_default (or the ONNX export), and the answer is given as the signature gives it: ``outputs``
[rows, max width], zero beyond each row's head width, and ``output_width`` [rows]. A request
waits at most MODELHUB_PREDICT_MAX_WAIT seconds in all; then it answers 503 with Retry-After.
"""

from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser

from assemblies.inputs import MAX_ROWS, coerce_inputs
from assemblies.models import Assembly, Prediction
from assemblies.services import prediction_batch_create, prediction_wait
from core.errors import ApplicationError, ValidationError

# Seconds a client is asked to wait before trying again after a 503 (no answer in time).
RETRY_AFTER_SECONDS = 5


class InferenceTimeoutError(ApplicationError):
    """No worker answered within MODELHUB_PREDICT_MAX_WAIT: 503, to be retried after Retry-After seconds."""

    status_code = 503
    code = "unavailable"
    retry_after = RETRY_AFTER_SECONDS


class InferenceFailedError(ApplicationError):
    """The worker ran the prediction and it failed (the message is the worker's)."""

    status_code = 400
    code = "prediction_failed"


@dataclass
class InferenceAnswer:
    """What the serving signature answers: outputs [rows, max width] (zero-padded) and output_width [rows]."""

    outputs: np.ndarray
    output_width: np.ndarray
    prediction_ids: list[int]


def task_ids_resolve(assembly: Assembly, *, task_ids=None, tasks=None) -> list[int]:
    """Return one task id per row from ``task_ids`` (numbers) or ``tasks`` (slugs); raise ValidationError."""
    heads = assembly.manifest.get("heads", [])
    valid = ", ".join(f"{entry['task_id']}={entry['task']}" for entry in heads)
    if (task_ids is None) == (tasks is None):
        raise ValidationError(
            "Give the task of each row once: 'task_id' (numbers) or 'task' (slugs), "
            f"not {'both' if tasks else 'neither'}. "
            f"Tasks of assembly {assembly.pk}: {valid}."
        )
    if tasks is not None:
        if not all(isinstance(task, str) for task in tasks):
            raise ValidationError(
                f"'task' holds one task slug (a string) per row. Tasks of assembly {assembly.pk}: {valid}."
            )
        by_slug = {entry["task"]: entry["task_id"] for entry in heads}
        unknown = sorted({str(task) for task in tasks if task not in by_slug})
        if unknown:
            raise ValidationError(f"Unknown task slug(s) {unknown} for assembly {assembly.pk}. Valid tasks: {valid}.")
        return [by_slug[task] for task in tasks]
    if not all(isinstance(task_id, int) and not isinstance(task_id, bool) for task_id in task_ids):
        raise ValidationError(f"'task_id' holds one integer per row. Tasks of assembly {assembly.pk}: {valid}.")
    ids = {entry["task_id"] for entry in heads}
    bad = sorted({int(task_id) for task_id in task_ids if int(task_id) not in ids})
    if bad:
        raise ValidationError(f"Unknown task_id(s) {bad} for assembly {assembly.pk}. Valid tasks: {valid}.")
    return [int(task_id) for task_id in task_ids]


def inference_run(
    *, assembly: Assembly, user: AbstractBaseUser, inputs, task_ids=None, tasks=None, task_id_for_all: int | None = None
) -> InferenceAnswer:
    """Check the rows, queue one prediction carrying each row's task, wait for it, return the signature's answer.

    ``inputs`` is what POST /api/assemblies/{id}/predict/ takes (a batch: a nested list for one
    input, an object by input name for several); ``task_ids`` or ``tasks`` give each row's task,
    or ``task_id_for_all`` one task for every row (a per-task signature).

    Raises:
        ValidationError: inputs or tasks that do not fit the manifest (nothing was queued).
        InferenceTimeoutError: no answer within MODELHUB_PREDICT_MAX_WAIT (503, Retry-After).
        InferenceFailedError: the worker failed (its message).
    """
    rows = coerce_inputs(assembly, inputs)
    columns = rows if isinstance(rows, dict) else None
    num_rows = len(next(iter(columns.values()))) if columns is not None else len(rows)
    if task_id_for_all is not None:
        task_ids = [task_id_for_all] * num_rows
    row_tasks = task_ids_resolve(assembly, task_ids=task_ids, tasks=tasks)
    if len(row_tasks) != num_rows:
        raise ValidationError(
            f"The inputs hold {num_rows} row(s) but {len(row_tasks)} task(s) were given: give one task per row "
            f"(shape [{num_rows}])."
        )
    if num_rows > MAX_ROWS:
        raise ValidationError(f"Send between 1 and {MAX_ROWS} rows; received {num_rows}.")
    # ONE prediction for the whole batch, a task per row: the worker runs it in one call, as
    # serving_default takes a mixed batch (never one job, and one model load, per task).
    prediction = prediction_batch_create(assembly=assembly, user=user, task_ids=row_tasks, inputs=rows)
    prediction = prediction_wait(prediction=prediction, seconds=float(settings.MODELHUB_PREDICT_MAX_WAIT))
    if prediction.status not in (Prediction.Status.SUCCEEDED, Prediction.Status.FAILED):
        raise InferenceTimeoutError(
            f"No worker answered within {settings.MODELHUB_PREDICT_MAX_WAIT} s (MODELHUB_PREDICT_MAX_WAIT): the "
            f"workers are busy or none is running. Try again in {RETRY_AFTER_SECONDS} s; prediction {prediction.pk} "
            f"goes on and can be seen at GET /api/assemblies/{assembly.pk}/predictions/{prediction.pk}/."
        )
    if prediction.status == Prediction.Status.FAILED:
        raise InferenceFailedError(f"The prediction failed in the worker: {prediction.error}")
    return _answer(assembly, prediction, row_tasks)


def _answer(assembly: Assembly, prediction: Prediction, row_tasks: list[int]) -> InferenceAnswer:
    """Pad the worker's rows (each cut to its head's width) to the serving signature's [rows, max width]."""
    widths = {entry["task_id"]: int(entry["output_width"]) for entry in assembly.manifest["heads"]}
    max_width = int(assembly.manifest.get("serving", {}).get("max_width") or max(widths.values()))
    outputs = np.zeros((len(row_tasks), max_width), dtype=np.float32)
    for index, row in enumerate(prediction.outputs):
        values = np.asarray(row, dtype=np.float32).reshape(-1)[:max_width]
        outputs[index, : values.shape[0]] = values
    output_width = np.asarray([widths[task_id] for task_id in row_tasks], dtype=np.int32)
    return InferenceAnswer(outputs=outputs, output_width=output_width, prediction_ids=[prediction.pk])
