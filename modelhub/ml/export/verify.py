"""Check an export against the assembled SavedModel before it is offered.

One mixed batch covering every task (rows of all tasks shuffled together; above
``END_TO_END_MAX_ROWS`` tasks, the assembly verification's spread: first, last, one of each
head architecture, evenly spaced ones, and every branched task) runs through the SavedModel's
``serving_default`` and through the export, in chunks. Per task: the max abs difference, the
argmax agreement, the width and the zero padding. ``none`` must be within the assembly
tolerance (:data:`modelhub.ml.tolerance.VERIFY_TOLERANCE`, relative to ``max(1, max |reference|)``);
``float16`` and ``dynamic_int8`` are reported, not judged. Per-task LiteRT signatures are run on
each covered task's rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from modelhub.ml.assembly.manifest import OUTPUTS_KEY, SERVING_KEY, WIDTH_KEY, AssemblyHead
from modelhub.ml.assembly.verify import END_TO_END_MAX_ROWS, _probe_by_serving_name, _spread_tasks
from modelhub.ml.errors import ExportError
from modelhub.ml.probes import probe_inputs_for
from modelhub.ml.tolerance import VERIFY_TOLERANCE

CHUNK_ROWS = 64


def verification_batch(
    backbone: Any, heads: Sequence[AssemblyHead], probe_inputs: Any
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Return the mixed batch (inputs by serving name) and each row's task id."""
    if probe_inputs is None:
        probe_inputs = probe_inputs_for(backbone, num_rows=2)
    by_name = _probe_by_serving_name(backbone, probe_inputs)
    num_rows = int(next(iter(by_name.values())).shape[0])
    num_heads = len(heads)
    rows_per_task = num_rows if num_heads * num_rows <= END_TO_END_MAX_ROWS else 1
    branched = [t for t, head in enumerate(heads) if head.branch is not None]
    spread = _spread_tasks([head.model for head in heads], max(1, END_TO_END_MAX_ROWS // rows_per_task))
    covered = sorted(set(spread) | set(branched))
    task_of_row = np.repeat(np.asarray(covered, np.int32), rows_per_task)
    probe_row = np.tile(np.arange(rows_per_task), len(covered))
    if rows_per_task == 1:
        probe_row = np.arange(len(covered)) % num_rows
    order = np.random.default_rng(0).permutation(len(task_of_row))
    return {name: array[probe_row[order]] for name, array in by_name.items()}, task_of_row[order]


def saved_model_outputs(
    saved_model_dir: str, inputs: dict[str, np.ndarray], task_of_row: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Run the SavedModel's ``serving_default`` on the batch, ``CHUNK_ROWS`` rows at a time."""
    serve = tf.saved_model.load(str(saved_model_dir)).signatures[SERVING_KEY]
    return in_chunks(
        lambda rows: _numpy(
            serve(**{n: tf.constant(a[rows]) for n, a in inputs.items()}, task_id=tf.constant(task_of_row[rows]))
        ),
        len(task_of_row),
    )


def in_chunks(run: Callable[[slice], tuple[np.ndarray, np.ndarray]], num_rows: int) -> tuple[np.ndarray, np.ndarray]:
    parts = [run(slice(start, start + CHUNK_ROWS)) for start in range(0, num_rows, CHUNK_ROWS)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _numpy(result: dict[str, tf.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    return result[OUTPUTS_KEY].numpy(), result[WIDTH_KEY].numpy()


def compare(
    *,
    fmt: str,
    quantization: str,
    tasks: Sequence[str],
    widths: Sequence[int],
    task_of_row: np.ndarray,
    expected: np.ndarray,
    got: np.ndarray,
    got_widths: np.ndarray,
    rtol: float = VERIFY_TOLERANCE,
) -> dict[str, Any]:
    """Compare the export's rows with the SavedModel's, task by task; raise ExportError when ``none`` is off.

    Returns ``{"max_abs_diff", "passed", "within_tolerance", "tasks": [{"task_id", "task", "max_abs_diff",
    "argmax_agreement"}]}``.
    """
    label = f"the {fmt} export ({quantization})"
    if got.shape != expected.shape:
        raise ExportError(f"Expected {label} to return outputs of shape {list(expected.shape)}, got {list(got.shape)}.")
    report, passed = [], True
    for task_id in sorted(set(task_of_row.tolist())):
        rows = np.flatnonzero(task_of_row == task_id)
        width = int(widths[task_id])
        if not np.all(got_widths[rows] == width):
            raise ExportError(
                f"Expected output_width {width} for task '{tasks[task_id]}' from {label}, "
                f"got {sorted(set(got_widths[rows].tolist()))}."
            )
        if np.any(got[rows, width:] != 0):
            raise ExportError(f"Expected zero padding beyond width {width} for task '{tasks[task_id]}' from {label}.")
        reference, mine = expected[rows, :width].astype(np.float64), got[rows, :width].astype(np.float64)
        diff = float(np.max(np.abs(reference - mine))) if reference.size else 0.0
        scale = max(1.0, float(np.max(np.abs(reference))) if reference.size else 1.0)
        agreement = float(np.mean(np.argmax(reference, axis=1) == np.argmax(mine, axis=1)))
        within = diff <= rtol * scale
        if quantization == "none" and not within:
            raise ExportError(
                f"Expected {label} to reproduce the SavedModel within {rtol * scale:.3g} ({rtol:g} x max(1, max "
                f"|output|)) for task '{tasks[task_id]}' (task_id {task_id}), max abs diff is {diff:.3g}. "
                "The export is not offered."
            )
        passed = passed and within
        report.append({"task_id": task_id, "task": tasks[task_id], "max_abs_diff": diff, "argmax_agreement": agreement})
    # "passed": the export may be offered (none: within the tolerance, else it raised above;
    # float16 / dynamic_int8: reported, not judged). "within_tolerance": every task within it.
    return {
        "max_abs_diff": max(r["max_abs_diff"] for r in report),
        "passed": True,
        "within_tolerance": passed,
        "tasks": report,
    }


# The dataset check runs (tasks x rows) rows through both runtimes: at most this many. Above it,
# the tasks with labels and evenly spaced others are checked (the report says how many of how many).
DATASET_MAX_EVALUATIONS = 8192


def dataset_agreement(
    *,
    run_export: Callable[[dict[str, np.ndarray], np.ndarray], tuple[np.ndarray, np.ndarray]],
    saved_model_dir: str,
    backbone: Any,
    dataset: tuple[Any, Any],
    tasks: Sequence[str],
    widths: Sequence[int],
    max_evaluations: int = DATASET_MAX_EVALUATIONS,
) -> dict[str, Any]:
    """Argmax agreement (and accuracy, with labels) of the export vs the SavedModel on a dataset, per task.

    ``dataset`` is ``(inputs, y)``: inputs as the backbone takes them; ``y`` maps task slugs to
    integer labels per row (or to None for agreement only). Every row runs with each named task's
    id through the SavedModel (loaded once) and the export, ``CHUNK_ROWS`` rows at a time; when
    tasks x rows exceeds ``max_evaluations``, the labelled tasks and evenly spaced others are run.

    Returns ``{"rows", "tasks_named", "tasks": [{"task", "rows", "argmax_agreement", "max_abs_diff",
    "accuracy_saved_model"?, "accuracy_export"?}]}``.
    """
    inputs, y = dataset
    if not isinstance(y, dict) or not y:
        raise ExportError("Expected dataset=(inputs, {task slug: labels or None}), received another y.")
    unknown = sorted(set(y) - set(tasks))
    if unknown:
        raise ExportError(f"Expected dataset tasks among the assembly's tasks, unknown: {unknown[:10]}.")
    by_name = _probe_by_serving_name(backbone, inputs)
    num_rows = int(next(iter(by_name.values())).shape[0])
    if num_rows == 0:
        raise ExportError("Expected dataset rows to report the argmax agreement on, received none.")
    for task, labels in y.items():
        if labels is not None and np.asarray(labels).reshape(-1).shape[0] != num_rows:
            raise ExportError(
                f"Expected {num_rows} labels for task '{task}' (one per dataset row), "
                f"received {np.asarray(labels).reshape(-1).shape[0]}."
            )
    named = sorted((tasks.index(task) for task in y), key=lambda t: (y[tasks[t]] is None, t))
    budget = max(1, max_evaluations // num_rows)
    if len(named) > budget:
        labelled = [t for t in named if y[tasks[t]] is not None][:budget]
        others = [t for t in named if y[tasks[t]] is None]
        room = budget - len(labelled)
        picked = [others[round(i * (len(others) - 1) / max(1, room - 1))] for i in range(room)] if room else []
        named = labelled + sorted(set(picked))
    chosen = sorted(named)
    serve = tf.saved_model.load(str(saved_model_dir)).signatures[SERVING_KEY]
    found = []
    for task_id in chosen:
        ids, width = np.full(num_rows, task_id, np.int32), int(widths[task_id])

        def saved_model(rows: slice, ids: np.ndarray = ids) -> tuple[np.ndarray, np.ndarray]:
            feeds = {n: tf.constant(a[rows]) for n, a in by_name.items()}
            return _numpy(serve(**feeds, task_id=tf.constant(ids[rows])))

        def export(rows: slice, ids: np.ndarray = ids) -> tuple[np.ndarray, np.ndarray]:
            return run_export({n: a[rows] for n, a in by_name.items()}, ids[rows])

        reference = in_chunks(saved_model, num_rows)[0][:, :width]
        mine = in_chunks(export, num_rows)[0][:, :width]
        entry = {
            "task": tasks[task_id],
            "rows": num_rows,
            "argmax_agreement": float(np.mean(np.argmax(reference, 1) == np.argmax(mine, 1))),
            "max_abs_diff": float(np.max(np.abs(reference.astype(np.float64) - mine))),
        }
        labels = y[tasks[task_id]]
        if labels is not None:
            labels = np.asarray(labels).reshape(-1)
            entry["accuracy_saved_model"] = float(np.mean(np.argmax(reference, 1) == labels))
            entry["accuracy_export"] = float(np.mean(np.argmax(mine, 1) == labels))
        found.append(entry)
    return {"rows": num_rows, "tasks_named": len(y), "tasks": found}
