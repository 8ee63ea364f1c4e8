"""Run a protocol's inference request as trial predictions of an assembly, and wait a bounded time.

OIP and TF Serving requests carry a task per row (``task_id`` or ``task`` slugs); a trial
prediction serves one task. The rows are checked once against the manifest (assemblies.inputs),
split by task into one prediction each (assemblies.services, run by a worker), and the answers
are put back in row order as the SavedModel's serving signature gives them: ``outputs``
[rows, max width], zero beyond each row's head width, and ``output_width`` [rows]. A request
waits at most MODELHUB_PREDICT_MAX_WAIT seconds in all; then it answers 503 with Retry-After.
"""

import time
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser

from assemblies.inputs import MAX_ROWS, coerce_inputs
from assemblies.models import Assembly, Prediction
from assemblies.services import prediction_create, prediction_wait
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
    """Check the rows, queue one prediction per task present, wait for all, return the signature's answer.

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
    groups: dict[int, list[int]] = {}
    for index, task_id in enumerate(row_tasks):
        groups.setdefault(task_id, []).append(index)
    predictions = []
    for task_id, indexes in groups.items():
        if columns is not None:
            subset = {name: [values[i] for i in indexes] for name, values in columns.items()}
        else:
            subset = [rows[i] for i in indexes]
        prediction = prediction_create(assembly=assembly, user=user, task=None, task_id=task_id, inputs=subset)
        predictions.append((prediction, indexes))
    deadline = time.monotonic() + float(settings.MODELHUB_PREDICT_MAX_WAIT)
    for prediction, _ in predictions:
        prediction_wait(prediction=prediction, seconds=max(0.0, deadline - time.monotonic()))
    pending = [p.pk for p, _ in predictions if p.status not in (Prediction.Status.SUCCEEDED, Prediction.Status.FAILED)]
    if pending:
        raise InferenceTimeoutError(
            f"No worker answered within {settings.MODELHUB_PREDICT_MAX_WAIT} s (MODELHUB_PREDICT_MAX_WAIT): the "
            f"workers are busy or none is running. Try again in {RETRY_AFTER_SECONDS} s; prediction(s) {pending} "
            "go on and can be seen at GET /api/assemblies/{id}/predictions/{pid}/."
        )
    failed = [p for p, _ in predictions if p.status == Prediction.Status.FAILED]
    if failed:
        raise InferenceFailedError(f"The prediction failed in the worker: {failed[0].error}")
    return _answer(assembly, predictions, row_tasks)


def _answer(assembly: Assembly, predictions: list, row_tasks: list[int]) -> InferenceAnswer:
    widths = {entry["task_id"]: int(entry["output_width"]) for entry in assembly.manifest["heads"]}
    max_width = int(assembly.manifest.get("serving", {}).get("max_width") or max(widths.values()))
    outputs = np.zeros((len(row_tasks), max_width), dtype=np.float32)
    for prediction, indexes in predictions:
        values = np.asarray(prediction.outputs, dtype=np.float32).reshape(len(indexes), -1)
        outputs[indexes, : values.shape[1]] = values
    output_width = np.asarray([widths[task_id] for task_id in row_tasks], dtype=np.int32)
    return InferenceAnswer(outputs=outputs, output_width=output_width, prediction_ids=[p.pk for p, _ in predictions])
