"""Verify a written assembly against its component models before it is offered.

Every head is checked against ``head(backbone(x))`` computed independently of the assembly
(Keras for a Keras head, NumPy for a packed Dense head; a branched head through the backbone
cut by Keras), on probe inputs (:mod:`modelhub.ml.probes`), within the one tolerance
(:data:`modelhub.ml.tolerance.VERIFY_TOLERANCE`).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from modelhub.ml.assembly.head_stage import group_key
from modelhub.ml.assembly.manifest import (
    BY_TASK_KEY,
    MANIFEST_PATH,
    OUTPUTS_KEY,
    SERVING_KEY,
    WIDTH_KEY,
    serving_inputs,
)
from modelhub.ml.assembly.trunk import AssemblyBranch
from modelhub.ml.branches import trunk_until
from modelhub.ml.errors import AssemblyError, AssemblyVerificationError
from modelhub.ml.head_weights import PackedDenseHead
from modelhub.ml.probes import check_close, probe_inputs_for
from modelhub.ml.tolerance import VERIFY_TOLERANCE

# Verification runs serving_default end to end on at most this many rows; when the tasks
# need more, it covers a spread of them end to end and every task through the saved
# head_stage (the function serving_default calls) on the backbone's features.
END_TO_END_MAX_ROWS = 256


# serving_by_task is checked on this many rows of that batch (its table on every slug).
BY_TASK_CHECK_ROWS = 32


# The verification batch goes through the backbone this many rows per call (a MobileNetV2 at
# 96x96 holds ~2 MB of activations per row), and through the head stage this many per call.
VERIFY_CHUNK_ROWS = 64


HEAD_STAGE_CHUNK_ROWS = 256


def verify_assembly(
    export_dir: str | os.PathLike[str],
    backbone: keras.Model,
    heads: Sequence[keras.Model | PackedDenseHead],
    probe_inputs: Any = None,
    *,
    rtol: float = VERIFY_TOLERANCE,
    branches: Sequence[AssemblyBranch | None] | None = None,
) -> dict[str, Any]:
    """Check a written assembly against ``head(backbone(x))`` for every head.

    1. ``serving_default`` runs one mixed batch, rows of every task shuffled together (at
       most ``END_TO_END_MAX_ROWS`` rows: beyond that, a spread of tasks that includes the
       first, the last and every head architecture), against the backbone's features of the
       probe rows (the batch repeats them; each row's own path when it has a branch) and each
       head run on its rows.
    2. When step 1 did not cover every task, the saved ``head_stage`` (the function
       ``serving_default`` calls after the backbone) runs one mixed batch covering every
       task, on the backbone's features of the probe rows.
    3. ``serving_by_task`` runs the batch of step 1 with task slugs instead of ids.
    4. Per-task signatures, when the assembly has them, each run the probe rows.

    References are computed independently of the assembly: a Keras head is called as
    Keras; a packed Dense head is computed in NumPy from its own weights file. A head with
    a branch is checked against ``head(branch(backbone up to its point(x)))``, the backbone
    cut by Keras (not from the file the SavedModel's trunk was cut from); every branched
    task runs end to end, whatever the number of tasks. A head
    passes when its max abs difference is at most ``rtol * max(1, max |reference|)``:
    float noise grows with the size of the values, so the tolerance does too.

    Args:
        export_dir: the SavedModel directory.
        backbone: the backbone Keras model.
        heads: head models (or packed Dense heads) in task_id order.
        branches: per task, its branch or None (all None when not given).
        probe_inputs: backbone inputs (an array, or a dict by input name for several
            inputs); deterministic ones when None.
        rtol: the tolerance relative to ``max(1, max |reference|)``.

    Returns:
        ``{"max_abs_diff", "max_rel_diff", "rtol", "heads": [{"task_id", "task",
        "max_abs_diff", "max_rel_diff"}], "num_probe_rows", "end_to_end_tasks",
        "head_stage_tasks", "checked": [...]}``.

    Raises:
        AssemblyVerificationError: a head differs by more than the tolerance, or padding /
            widths are wrong; the message names the first failing task and both figures.

    Example:
        >>> verify_assembly("out/asm", bb, [head_a, head_b])["max_rel_diff"] < 1e-5
        True
    """
    if probe_inputs is None:
        probe_inputs = probe_inputs_for(backbone, num_rows=2)
    by_name = _probe_by_serving_name(backbone, probe_inputs)
    manifest = json.loads((Path(export_dir) / MANIFEST_PATH).read_text())
    loaded = tf.saved_model.load(str(export_dir))
    num_rows = int(next(iter(by_name.values())).shape[0])
    num_heads = len(heads)
    entries = manifest["heads"]
    if len(entries) != num_heads:
        raise AssemblyVerificationError(f"Expected {num_heads} heads in the manifest, found {len(entries)}.")
    # The reference runs as a graph, as a SavedModel always does: on CPU, graph-mode op fusions
    # round differently from eager execution (EfficientNetB0: 1.7e-5 relative, the model alone).
    reference_backbone = _graph_backbone(backbone)
    branches = list(branches) if branches is not None else [None] * num_heads
    branched = [task_id for task_id, branch in enumerate(branches) if branch is not None]

    def features_of(task_of_row: np.ndarray, rows_input: dict[str, np.ndarray]) -> np.ndarray:
        """Each row's reference features, through its task's branch when it has one."""
        if not branched:
            return _in_chunks(
                len(task_of_row),
                VERIFY_CHUNK_ROWS,
                lambda rows: np.asarray(
                    reference_backbone(_probe_for_keras(backbone, {n: a[rows] for n, a in rows_input.items()}))
                ),
            )
        return reference_features(
            backbone,
            branches,
            task_of_row,
            lambda rows: _probe_for_keras(backbone, {n: a[rows] for n, a in rows_input.items()}),
            reference_backbone,
            chunk_rows=VERIFY_CHUNK_ROWS,
        )

    figures_of: dict[int, dict[str, float]] = {}
    checked = []

    def record(task_id: int, figures: dict[str, float]) -> None:
        previous = figures_of.get(task_id)
        if previous is None or figures["max_abs_diff"] > previous["max_abs_diff"]:
            figures_of[task_id] = figures

    def check_task(task_id: int, expected: np.ndarray, got: np.ndarray, widths: np.ndarray | None, where: str):
        entry = entries[task_id]
        width = entry["output_width"]
        if widths is not None and not np.all(widths == width):
            raise AssemblyVerificationError(
                f"Expected output_width {width} for task '{entry['task']}' in {where}, "
                f"got {sorted(set(widths.tolist()))}."
            )
        if np.any(got[:, width:] != 0):
            raise AssemblyVerificationError(
                f"Expected zero padding beyond width {width} for task '{entry['task']}' in {where}, found "
                f"max abs {float(np.max(np.abs(got[:, width:]))):.3g}."
            )
        what = f"the assembly's task '{entry['task']}' (task_id {task_id}, {where})"
        record(task_id, check_close(expected, got[:, :width], what=what, error=AssemblyVerificationError, rtol=rtol))

    # 1. serving_default end to end on one mixed batch (and 3. the same batch by task slug).
    # Every probe row for every task while that fits; else one row per task, probe rows in turn.
    rows_per_task = num_rows if num_heads * num_rows <= END_TO_END_MAX_ROWS else 1
    covered = sorted(set(_spread_tasks(heads, max(1, END_TO_END_MAX_ROWS // rows_per_task))) | set(branched))
    rng = np.random.default_rng(0)
    task_of_row = np.repeat(np.asarray(covered, np.int32), rows_per_task)
    probe_row = np.tile(np.arange(rows_per_task), len(covered))
    if rows_per_task == 1:
        probe_row = np.arange(len(covered)) % num_rows
    permutation = rng.permutation(len(task_of_row))
    task_of_row, probe_row = task_of_row[permutation], probe_row[permutation]
    mixed = {name: array[probe_row] for name, array in by_name.items()}
    # The backbone's features of the probe rows, computed once (the batch repeats them).
    probe_features_once = functools.cache(
        lambda: _in_chunks(
            num_rows,
            VERIFY_CHUNK_ROWS,
            lambda rows: np.asarray(
                reference_backbone(_probe_for_keras(backbone, {n: a[rows] for n, a in by_name.items()}))
            ),
        )
    )
    mixed_features = features_of(task_of_row, mixed) if branched else probe_features_once()[probe_row]
    chunks = [
        loaded.signatures[SERVING_KEY](
            **{name: tf.constant(array[rows]) for name, array in mixed.items()},
            task_id=tf.constant(task_of_row[rows]),
        )
        for rows in _chunk_slices(len(task_of_row), VERIFY_CHUNK_ROWS)
    ]
    by_id = {key: np.concatenate([chunk[key].numpy() for chunk in chunks]) for key in (OUTPUTS_KEY, WIDTH_KEY)}
    for task_id in covered:
        rows = np.flatnonzero(task_of_row == task_id)
        expected = _reference(heads[task_id], mixed_features[rows])
        check_task(task_id, expected, by_id[OUTPUTS_KEY][rows], by_id[WIDTH_KEY][rows], SERVING_KEY)
    checked.append(f"{SERVING_KEY} on {len(task_of_row)} rows over {len(covered)} tasks")

    # 3. serving_by_task: every slug maps to its task id (the stored table, no backbone needed),
    #    and the first rows of the mixed batch give the same answers by slug.
    if BY_TASK_KEY in loaded.signatures:
        slugs = [entry["task"] for entry in entries]
        mapped = loaded.task_ids(tf.constant(slugs)).numpy()
        wrong = np.flatnonzero(mapped != np.arange(num_heads))
        if wrong.size:
            first = int(wrong[0])
            raise AssemblyVerificationError(
                f"Expected {BY_TASK_KEY} to map task '{slugs[first]}' to task_id {first}, it maps it to "
                f"{int(mapped[first])}."
            )
        head_rows = np.arange(min(len(task_of_row), BY_TASK_CHECK_ROWS))
        by_slug = loaded.signatures[BY_TASK_KEY](
            **{name: tf.constant(array[head_rows]) for name, array in mixed.items()},
            task=tf.constant([slugs[int(t)] for t in task_of_row[head_rows]]),
        )
        for task_id in sorted(set(task_of_row[head_rows].tolist())):
            rows = np.flatnonzero(task_of_row[head_rows] == task_id)
            check_task(
                task_id,
                _reference(heads[task_id], mixed_features[rows]),
                by_slug[OUTPUTS_KEY].numpy()[rows],
                by_slug[WIDTH_KEY].numpy()[rows],
                BY_TASK_KEY,
            )
        checked.append(f"{BY_TASK_KEY}: every slug's task_id, and {len(head_rows)} rows of the batch")

    # 2. Every task through the saved head stage, on the probe rows' features.
    head_stage_tasks = 0
    if len(covered) < num_heads:
        probe_features = probe_features_once()
        all_tasks = np.repeat(np.arange(num_heads, dtype=np.int32), num_rows)
        order = rng.permutation(len(all_tasks))
        stage_tasks = all_tasks[order]
        stage_rows = np.tile(np.arange(num_rows), num_heads)[order]
        stage_out = _in_chunks(
            len(stage_tasks),
            HEAD_STAGE_CHUNK_ROWS,
            lambda rows: loaded.head_stage(
                tf.constant(probe_features[stage_rows[rows]]), tf.constant(stage_tasks[rows])
            ).numpy(),
        )
        by_task = np.argsort(stage_tasks, kind="stable")
        starts = np.searchsorted(stage_tasks[by_task], np.arange(num_heads + 1))
        for task_id in range(num_heads):
            rows = by_task[starts[task_id] : starts[task_id + 1]]
            expected = _reference(heads[task_id], probe_features[stage_rows[rows]])
            check_task(task_id, expected, stage_out[rows], None, "head_stage")
        head_stage_tasks = num_heads
        checked.append(f"head_stage on {len(stage_tasks)} rows over every task")

    # 4. Per-task signatures, only when the assembly has them.
    if manifest["serving"].get("per_head_signatures", True):
        probe_features = probe_features_once()
        probe = {name: tf.constant(array) for name, array in by_name.items()}
        for task_id, entry in enumerate(entries):
            single = loaded.signatures[entry["signature"]](**probe)[OUTPUTS_KEY].numpy()
            padded = np.zeros((single.shape[0], manifest["serving"]["max_width"]), np.float32)
            padded[:, : single.shape[1]] = single
            features = (
                probe_features
                if branches[task_id] is None
                else features_of(np.full(num_rows, task_id, np.int32), by_name)
            )
            check_task(task_id, _reference(heads[task_id], features), padded, None, f"signature '{entry['signature']}'")
        checked.append(f"{num_heads} per-task signatures")

    report = [
        {
            "task_id": task_id,
            "task": entries[task_id]["task"],
            "max_abs_diff": figures_of[task_id]["max_abs_diff"],
            "max_rel_diff": figures_of[task_id]["max_rel_diff"],
        }
        for task_id in range(num_heads)
    ]
    return {
        "max_abs_diff": max(item["max_abs_diff"] for item in report),
        "max_rel_diff": max(item["max_rel_diff"] for item in report),
        "rtol": rtol,
        "heads": report,
        "num_probe_rows": num_rows,
        "end_to_end_tasks": len(covered),
        "head_stage_tasks": head_stage_tasks,
        "checked": checked,
    }


def _graph_backbone(backbone: keras.Model) -> Callable[[Any], tf.Tensor]:
    """The backbone as one graph for any batch size (traced once: chunks of other sizes reuse it)."""
    entries = serving_inputs(backbone)
    specs = [tf.TensorSpec(entry["shape"], tf.as_dtype(entry["dtype"])) for entry in entries]
    if len(entries) == 1:
        return tf.function(lambda inputs: backbone(inputs, training=False), input_signature=specs, autograph=False)
    signature = [{entry["keras_name"]: spec for entry, spec in zip(entries, specs, strict=True)}]
    return tf.function(lambda inputs: backbone(inputs, training=False), input_signature=signature, autograph=False)


def _chunk_slices(num_rows: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, num_rows)) for start in range(0, num_rows, size)]


def _in_chunks(num_rows: int, size: int, compute: Callable[[slice], np.ndarray]) -> np.ndarray:
    """Compute rows ``size`` at a time (bounds the backbone's activations) and concatenate."""
    return np.concatenate([compute(rows) for rows in _chunk_slices(num_rows, size)])


def _reference(head: keras.Model | PackedDenseHead, features: np.ndarray) -> np.ndarray:
    """A head's output computed without the assembly: Keras for a model, NumPy for packed weights."""
    if isinstance(head, PackedDenseHead):
        return head.load().apply(features)
    return np.asarray(head(tf.constant(features), training=False))


def _spread_tasks(heads: Sequence[keras.Model | PackedDenseHead], limit: int) -> list[int]:
    """Return every task id, or at most ``limit`` of them: the first and last, one of each
    head architecture, then evenly spaced ones."""
    num_heads = len(heads)
    if num_heads <= limit:
        return list(range(num_heads))
    chosen: dict[int, None] = {0: None, num_heads - 1: None}
    seen_kinds: set[Any] = set()
    for task_id, head in enumerate(heads):
        kind = group_key(head, task_id)
        if kind[0] == "keras" or kind not in seen_kinds:
            seen_kinds.add(kind)
            chosen[task_id] = None
        if len(chosen) >= limit:
            break
    for task_id in np.linspace(0, num_heads - 1, limit).astype(int).tolist():
        if len(chosen) >= limit:
            break
        chosen[task_id] = None
    return sorted(chosen)[:limit]


def _probe_by_serving_name(backbone: keras.Model, probe_inputs: Any) -> dict[str, np.ndarray]:
    entries = serving_inputs(backbone)
    if not isinstance(probe_inputs, dict):
        if len(entries) != 1:
            raise AssemblyError(
                f"Expected probe inputs as a dict by input name for a backbone with {len(entries)} inputs."
            )
        return {entries[0]["name"]: np.asarray(probe_inputs)}
    return {entry["name"]: np.asarray(probe_inputs[entry["keras_name"]]) for entry in entries}


def _probe_for_keras(backbone: keras.Model, by_name: dict[str, np.ndarray]) -> Any:
    entries = serving_inputs(backbone)
    if len(entries) == 1:
        return by_name[entries[0]["name"]]
    return {entry["keras_name"]: by_name[entry["name"]] for entry in entries}


def reference_features(
    backbone: keras.Model,
    branches: Sequence[AssemblyBranch | None],
    task_of_row: np.ndarray,
    inputs: Callable[[np.ndarray], Any],
    graph_backbone: Callable[[Any], tf.Tensor],
    *,
    chunk_rows: int,
) -> np.ndarray:
    """Each row's features computed without the assembly: the Keras backbone, cut with Keras.

    Rows of plain tasks go through ``graph_backbone``; rows of a branched task go through
    the backbone's layers up to its point (:func:`trunk_until`, on the Keras model, not on
    the file the SavedModel was cut from) and then its branch.

    Args:
        inputs: ``inputs(row_indices)`` returns those rows as the backbone takes them.
    """
    parts: dict[Any, list[int]] = {}
    for row, task_id in enumerate(task_of_row.tolist()):
        branch = branches[task_id]
        parts.setdefault(None if branch is None else (branch.sha256, branch.after_layer), []).append(row)
    features: np.ndarray | None = None
    by_sha = {(branch.sha256, branch.after_layer): branch for branch in branches if branch is not None}
    untils: dict[str, Callable] = {}
    for key, rows in parts.items():
        rows = np.asarray(rows)
        if key is None:
            compute = graph_backbone
        else:
            branch = by_sha[key]
            if branch.after_layer not in untils:
                untils[branch.after_layer] = tf.function(trunk_until(backbone, branch.after_layer), autograph=False)
            until = untils[branch.after_layer]
            compute = lambda x, b=branch, u=until: b.model(u(x, training=False), training=False)  # noqa: E731
        for start in range(0, len(rows), chunk_rows):
            chunk = rows[start : start + chunk_rows]
            values = np.asarray(compute(inputs(chunk)), np.float32)
            if features is None:
                features = np.zeros((len(task_of_row), *values.shape[1:]), np.float32)
            features[chunk] = values
    return features
