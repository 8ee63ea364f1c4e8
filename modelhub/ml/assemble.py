"""Assemble one backbone and many heads into a single SavedModel ``f(inputs, task_id)``.

The SavedModel is a ``tf.Module`` that tracks the backbone's raw variables once (not
the Keras model object, which breaks the TF1/C++ loader, and not ``Model.export``,
which stores every variable twice). Heads that share an architecture (a chain of
Dense layers) are stacked into ``[num_heads, ...]`` variables; other heads keep their
own variables. Each row of a batch runs only its own head: narrow heads gather one
kernel per row, wide heads are computed once per distinct task in the batch. Every
build is verified against the component models before it is offered.

Heads may own a branch (the top of the backbone, with their own weights): the backbone is
then served as trunk segments and each row goes through its task's path
(:mod:`modelhub.ml.trunk_serving`) before the same head stage.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from modelhub.ml.branches import Trunk
from modelhub.ml.errors import AssemblyError, AssemblyVerificationError, FeatureShapeMismatchError
from modelhub.ml.head_weights import (
    PackedDenseHead,
    dense_chain_of,
    dense_chain_steps,
    steps_width,
)
from modelhub.ml.inspect import input_name
from modelhub.ml.split import VERIFY_RTOL, check_close, check_head_compatible, probe_inputs_for
from modelhub.ml.trunk_serving import (
    AssemblyBranch,
    BranchedFeatures,
    check_branches,
    plan_branches,
    reference_features,
    unless_empty,
)

FORMAT_VERSION = 1
MANIFEST_PATH = "assets/manifest.json"
SERVING_KEY = "serving_default"
BY_TASK_KEY = "serving_by_task"
INPUTS_KEY = "inputs"
TASK_ID_KEY = "task_id"
TASK_KEY = "task"
OUTPUTS_KEY = "outputs"
WIDTH_KEY = "output_width"
VERIFY_ATOL = VERIFY_RTOL  # scaled: max abs diff <= 1e-5 * max(1, max |reference|)
RESERVED_INPUT_NAMES = frozenset({TASK_ID_KEY, TASK_KEY})
# A batch may gather one kernel copy per row while that costs at most this many floats
# (16 MiB); above it, rows are grouped and each distinct task's kernel is read once.
PER_ROW_GATHER_MAX_FLOATS = 4 * 1024 * 1024
# Verification runs serving_default end to end on at most this many rows; when the tasks
# need more, it covers a spread of them end to end and every task through the saved
# head_stage (the function serving_default calls) on the backbone's features.
END_TO_END_MAX_ROWS = 256
# Stacked head weights are copied into their variables this many heads at a time.
STACK_CHUNK_HEADS = 256
# serving_by_task is checked on this many rows of that batch (its table on every slug).
BY_TASK_CHECK_ROWS = 32
# The verification batch goes through the backbone this many rows per call (a MobileNetV2 at
# 96x96 holds ~2 MB of activations per row), and through the head stage this many per call.
VERIFY_CHUNK_ROWS = 64
HEAD_STAGE_CHUNK_ROWS = 256
SIGNATURE_KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")


@dataclass(frozen=True)
class AssemblyHead:
    """One head to assemble.

    Attributes:
        task: the task slug; it names the head's own signature.
        model: the head: a Keras model whose single input is the backbone's features, or a
            :class:`PackedDenseHead` (a Dense chain whose weights are read on demand).
        version: the head version number.
        sha256: the head artifact's checksum (recorded in the manifest).
        labels: class labels, or None.
        branch: the backbone layers the head owns above a branch point, or None.
    """

    task: str
    model: keras.Model | PackedDenseHead
    version: int
    sha256: str
    labels: list[str] | None = field(default=None)
    branch: AssemblyBranch | None = field(default=None)


def build_assembly(
    *,
    backbone: keras.Model,
    heads: Sequence[AssemblyHead],
    export_dir: str | os.PathLike[str],
    backbone_info: dict[str, Any],
    probe_inputs: Any = None,
    verify: bool = True,
    per_head_signatures: bool = False,
    trunk: Trunk | None = None,
) -> dict[str, Any]:
    """Write one SavedModel serving every head on one backbone, and verify it.

    Args:
        backbone: the backbone Keras model (single input, single feature output).
        heads: the heads; their order defines ``task_id`` (0..N-1).
        export_dir: where to write the SavedModel; must not exist or be empty.
        backbone_info: ``{"name": str, "version": int, "sha256": str}`` for the manifest.
        probe_inputs: inputs for verification (an array, or a dict by input name);
            deterministic ones when None.
        verify: verify the written SavedModel (see :func:`verify_assembly`).
        per_head_signatures: also add one signature per task slug (off by default). Each
            one captures every backbone variable handle, which costs ~62 KB of graph and
            ~0.4 s of tracing per head on MobileNetV2. ``serving_default(inputs, task_id)``
            and ``serving_by_task(inputs, task)`` are always there.
        trunk: the backbone cut at every branch point of the heads' branches
            (:func:`modelhub.ml.branches.cut_backbone`, with its top when some head has no
            branch); required when a head has a branch. The SavedModel then stores the trunk
            segments instead of the backbone (the same weights, once) and each branch once.

    Returns:
        ``{"export_dir": str, "manifest": dict, "size_bytes": int,
        "verification": dict | None}``.

    Raises:
        AssemblyError: bad heads (empty, duplicate tasks, wrong feature shape).
        AssemblyVerificationError: the SavedModel does not match the components.

    Example:
        >>> result = build_assembly(backbone=bb, heads=[AssemblyHead("topic", head, 1, sha)],
        ...                         export_dir="out/asm", backbone_info={"name": "bb",
        ...                         "version": 1, "sha256": bb_sha})
        >>> result["verification"]["max_abs_diff"] <= 1e-5
        True
    """
    export_dir = Path(export_dir)
    if export_dir.exists() and any(export_dir.iterdir()):
        raise AssemblyError(
            f"Expected an empty or missing export directory, '{export_dir}' has files. Pass a fresh directory."
        )
    manifest = build_manifest(
        backbone=backbone,
        heads=heads,
        backbone_info=backbone_info,
        per_head_signatures=per_head_signatures,
        trunk=trunk,
    )
    module, signatures = _build_module(backbone, heads, manifest, trunk)
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".assembly-", dir=export_dir.parent))
    try:
        tf.saved_model.save(module, str(staging), signatures=signatures)
        del module, signatures  # the stacked head variables; the verification loads its own copy
        gc.collect()
        (staging / "assets").mkdir(exist_ok=True)
        (staging / MANIFEST_PATH).write_text(_manifest_json(manifest))
        if export_dir.exists():
            export_dir.rmdir()
        os.replace(staging, export_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    verification = None
    if verify:
        verification = verify_assembly(
            export_dir, backbone, [head.model for head in heads], probe_inputs, branches=[h.branch for h in heads]
        )
    return {
        "export_dir": str(export_dir),
        "manifest": manifest,
        "size_bytes": directory_bytes(export_dir),
        "verification": verification,
    }


def build_manifest(
    *,
    backbone: keras.Model,
    heads: Sequence[AssemblyHead],
    backbone_info: dict[str, Any],
    per_head_signatures: bool = False,
    trunk: Trunk | None = None,
) -> dict[str, Any]:
    """Return the manifest for an assembly, after checking the heads fit the backbone.

    Raises:
        AssemblyError: no heads, duplicate or invalid task slugs, multi-output heads,
            or a head whose input does not match the feature shape.
    """
    if len(backbone.outputs) != 1:
        raise AssemblyError(
            f"Expected a backbone with one output (the features), '{backbone.name}' has {len(backbone.outputs)}."
        )
    inputs = serving_inputs(backbone)
    if not heads:
        raise AssemblyError("Expected at least one head, received none. Approve a head first.")
    missing = {"name", "version", "sha256"} - set(backbone_info)
    if missing:
        raise AssemblyError(f"Expected backbone_info with name, version and sha256, missing {sorted(missing)}.")
    feature_shape = [None if d is None else int(d) for d in backbone.outputs[0].shape[1:]]
    seen: set[str] = set()
    entries = []
    for task_id, head in enumerate(heads):
        # A per-task signature is named after its task: those slugs may not shadow the shared ones.
        clashes = per_head_signatures and head.task in (SERVING_KEY, BY_TASK_KEY)
        if not SIGNATURE_KEY_PATTERN.fullmatch(head.task) or clashes:
            raise AssemblyError(
                f"Expected a task slug of letters, digits, '-' and '_' (with per-task signatures, not "
                f"'{SERVING_KEY}' or '{BY_TASK_KEY}'), "
                f"received '{head.task}'. Rename the task."
            )
        if head.task in seen:
            raise AssemblyError(f"Expected each task once, received '{head.task}' twice. Pick one head version.")
        seen.add(head.task)
        out_shape = _head_output_shape(head, feature_shape, backbone_info)
        entries.append(
            {
                "task_id": task_id,
                "task": head.task,
                "signature": head.task,
                "version": int(head.version),
                "sha256": head.sha256,
                "output_width": int(out_shape[0]),
                "labels": list(head.labels) if head.labels is not None else None,
                "branch": _branch_entry(head.branch),
            }
        )
    described = [{key: entry[key] for key in ("name", "shape", "dtype")} for entry in inputs]
    backbone_entry = {
        "name": backbone_info["name"],
        "version": int(backbone_info["version"]),
        "sha256": backbone_info["sha256"],
        "inputs": described,
        "feature_shape": feature_shape,
    }
    if len(described) == 1:
        backbone_entry["input"] = described[0]
    branches = [head.branch for head in heads]
    if any(branch is not None for branch in branches):
        if trunk is None:
            raise AssemblyError("Expected a trunk (the backbone cut at the branch points) for heads with branches.")
        plan = plan_branches(branches, trunk)
        check_branches(plan, trunk, feature_shape, [head.task for head in heads])
        backbone_entry["trunk"] = {
            "branch_points": list(trunk.points),
            "distinct_branches": len(plan.branches),
            "segments": len(trunk.segments),
        }
    return {
        "format_version": FORMAT_VERSION,
        "backbone": backbone_entry,
        "serving": {
            "signature": SERVING_KEY,
            "inputs": [entry["name"] for entry in described] + [TASK_ID_KEY],
            "outputs": [OUTPUTS_KEY, WIDTH_KEY],
            "max_width": max(entry["output_width"] for entry in entries),
            "per_head_signatures": per_head_signatures,
            "by_task": {
                "signature": BY_TASK_KEY,
                "inputs": [entry["name"] for entry in described] + [TASK_KEY],
                "outputs": [OUTPUTS_KEY, WIDTH_KEY],
            },
        },
        "heads": entries,
    }


def _branch_entry(branch: AssemblyBranch | None) -> dict[str, Any] | None:
    if branch is None:
        return None
    return {
        "after_layer": branch.after_layer,
        "layers": len(branch.layers),
        "params": branch.params,
        "sha256": branch.sha256,
    }


def _head_output_shape(
    head: AssemblyHead, feature_shape: list[int | None], backbone_info: dict[str, Any]
) -> list[int | None]:
    """Check that a head takes the features and outputs one vector; return its output shape."""
    label = f"backbone '{backbone_info['name']}' v{backbone_info['version']}"
    if isinstance(head.model, PackedDenseHead):
        if feature_shape != [head.model.input_width]:
            raise AssemblyError(
                f"Head for task '{head.task}': expected features of shape {[None, *feature_shape]} from {label}, "
                f"the head takes [None, {head.model.input_width}]. Train or cut the head on this backbone."
            )
        return [head.model.width]
    try:
        check_head_compatible(head.model, feature_shape, backbone_label=label)
    except FeatureShapeMismatchError as error:
        raise AssemblyError(f"Head for task '{head.task}': {error}") from error
    if len(head.model.outputs) != 1:
        raise AssemblyError(
            f"Expected head '{head.task}' to have one output, it has "
            f"{len(head.model.outputs)}. Split it into one head per output."
        )
    out_shape = list(head.model.outputs[0].shape[1:])
    if len(out_shape) != 1 or out_shape[0] is None:
        raise AssemblyError(
            f"Expected head '{head.task}' to output a vector [batch, width], it outputs "
            f"{[None] + out_shape}. Add a Flatten or Reshape layer to the head."
        )
    return out_shape


def verify_assembly(
    export_dir: str | os.PathLike[str],
    backbone: keras.Model,
    heads: Sequence[keras.Model | PackedDenseHead],
    probe_inputs: Any = None,
    *,
    rtol: float = VERIFY_ATOL,
    branches: Sequence[AssemblyBranch | None] | None = None,
) -> dict[str, Any]:
    """Check a written assembly against ``head(backbone(x))`` for every head.

    1. ``serving_default`` runs one mixed batch, rows of every task shuffled together (at
       most ``END_TO_END_MAX_ROWS`` rows: beyond that, a spread of tasks that includes the
       first, the last and every head architecture), against the backbone run on the same
       batch and each head run on its rows.
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
    mixed_features = features_of(task_of_row, mixed)
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

    # The backbone's features of the probe rows, for steps 2 and 4 (computed once, when needed).
    probe_features_once = functools.cache(lambda: np.asarray(reference_backbone(_probe_for_keras(backbone, by_name))))

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
        return tf.function(lambda inputs: backbone(inputs, training=False), input_signature=specs)
    signature = [{entry["keras_name"]: spec for entry, spec in zip(entries, specs, strict=True)}]
    return tf.function(lambda inputs: backbone(inputs, training=False), input_signature=signature)


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
        kind = _group_key(head, task_id)
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


def serving_inputs(backbone: keras.Model) -> list[dict[str, Any]]:
    """Return the SavedModel's backbone inputs: ``[{"name", "keras_name", "shape", "dtype"}]``.

    A single-input backbone is served as ``inputs``; several inputs keep their own names.

    Raises:
        AssemblyError: an input name that cannot be a signature argument or clashes
            with ``task_id``.
    """
    entries = []
    for tensor in backbone.inputs:
        keras_name = input_name(tensor, default=INPUTS_KEY)
        entries.append(
            {
                "name": keras_name,
                "keras_name": keras_name,
                "shape": [None] + [None if d is None else int(d) for d in tensor.shape[1:]],
                "dtype": str(tensor.dtype),
            }
        )
    if len(entries) == 1:
        entries[0]["name"] = INPUTS_KEY
        return entries
    for entry in entries:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", entry["name"]) or entry["name"] in RESERVED_INPUT_NAMES:
            raise AssemblyError(
                f"Expected backbone input names made of letters, digits and '_' (not {sorted(RESERVED_INPUT_NAMES)}), "
                f"received '{entry['name']}'. Rename the keras.Input and save the model again."
            )
    return entries


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


def backbone_resources(model: keras.Model) -> list[Any]:
    """Return the TensorFlow resources (lookup tables) the backbone's layers hold.

    A SavedModel must track every resource its functions capture; a TextVectorization
    or StringLookup layer keeps its vocabulary in such tables, not in variables.
    """
    found: list[Any] = []
    for layer in model._flatten_layers(include_self=False, recursive=True):  # noqa: SLF001
        for value in vars(layer).values():
            if isinstance(value, tf.saved_model.experimental.TrackableResource) and all(
                value is not seen for seen in found
            ):
                found.append(value)
    return found


def directory_bytes(path: str | os.PathLike[str]) -> int:
    """Return the total size of the files under ``path``."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def variables_sha256(export_dir: str | os.PathLike[str]) -> str:
    """Return a sha256 over every variable (name, dtype, shape, bytes) saved in an assembly."""
    reader = tf.train.load_checkpoint(str(Path(export_dir) / "variables" / "variables"))
    digest = hashlib.sha256()
    for name in sorted(reader.get_variable_to_shape_map()):
        value = np.asarray(reader.get_tensor(name))
        digest.update(f"{name}:{value.dtype.str}:{list(value.shape)}\n".encode())
        digest.update(value.tobytes() if value.dtype != object else repr(value).encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------- internals


class _DenseChain:
    """Heads made of Dense (+ Activation/Dropout) layers, stacked into [G, ...] variables."""

    def __init__(
        self,
        members: list[keras.Model | PackedDenseHead],
        steps: list[tuple],
        module: tf.Module,
        index: int,
        max_width: int,
    ) -> None:
        self.steps = steps
        self.max_width = max_width
        self.width = steps_width(steps)
        dense_steps = [step for step in steps if step[0] == "dense"]
        input_width = _member_input_width(members[0])
        shapes, width = [], input_width
        for step in dense_steps:
            shapes.append((width, step[1]))
            width = step[1]

        # The variables are made first and filled a chunk of heads at a time, each head read once:
        # the build holds one copy of the stacked weights (10,000 Dense(10) heads: 512 MB), not
        # a stacked array plus the variable plus every head's own arrays.
        def variable(shape: tuple, name: str) -> tf.Variable:
            return tf.Variable(tf.zeros((len(members), *shape), tf.float32), trainable=False, name=name)

        self.kernels: list[tf.Variable] = []
        self.biases: list[tf.Variable | None] = []
        for dense_index, (shape, step) in enumerate(zip(shapes, dense_steps, strict=True)):
            self.kernels.append(variable(shape, f"group{index}_dense{dense_index}_kernel"))
            self.biases.append(variable(shape[1:], f"group{index}_dense{dense_index}_bias") if step[2] else None)
        chunk = min(len(members), STACK_CHUNK_HEADS)
        kernel_buffers = [np.empty((chunk, *shape), np.float32) for shape in shapes]
        bias_buffers = [np.empty((chunk, shape[1]), np.float32) for shape in shapes]
        for start in range(0, len(members), chunk):
            count = min(chunk, len(members) - start)
            for offset, member in enumerate(members[start : start + count]):
                chain = member.load() if isinstance(member, PackedDenseHead) else dense_chain_of(member)
                for dense_index, kernel in enumerate(chain.kernels):
                    kernel_buffers[dense_index][offset] = kernel
                    if chain.biases[dense_index] is not None:
                        bias_buffers[dense_index][offset] = chain.biases[dense_index]
            rows = tf.range(start, start + count)
            for dense_index, kernel in enumerate(self.kernels):
                kernel.scatter_update(tf.IndexedSlices(kernel_buffers[dense_index][:count], rows))
                if self.biases[dense_index] is not None:
                    self.biases[dense_index].scatter_update(tf.IndexedSlices(bias_buffers[dense_index][:count], rows))
        self.per_row_floats = sum(int(np.prod(shape)) for shape in shapes)
        setattr(module, f"group{index}_kernels", self.kernels)
        setattr(module, f"group{index}_biases", [b for b in self.biases if b is not None])

    def single(self, features: tf.Tensor, local: tf.Tensor) -> tf.Tensor:
        """Run head ``local`` (scalar) on every row: one kernel read per layer."""
        hidden = features
        dense_index = 0
        for step in self.steps:
            if step[0] == "dense":
                hidden = tf.matmul(hidden, tf.gather(self.kernels[dense_index], local))
                if self.biases[dense_index] is not None:
                    hidden = hidden + tf.gather(self.biases[dense_index], local)
                hidden = _activation(step[3])(hidden)
                dense_index += 1
            else:
                hidden = _activation(step[1])(hidden)
        return hidden

    def per_row(self, features: tf.Tensor, locals_: tf.Tensor) -> tf.Tensor:
        """Run each row's own head by gathering one kernel per row (narrow heads)."""
        hidden = features
        dense_index = 0
        for step in self.steps:
            if step[0] == "dense":
                kernels = tf.gather(self.kernels[dense_index], locals_)
                hidden = tf.einsum("bi,bio->bo", hidden, kernels)
                if self.biases[dense_index] is not None:
                    hidden = hidden + tf.gather(self.biases[dense_index], locals_)
                hidden = _activation(step[3])(hidden)
                dense_index += 1
            else:
                hidden = _activation(step[1])(hidden)
        return hidden

    def rows(self, features: tf.Tensor, locals_: tf.Tensor) -> tf.Tensor:
        """Run each row's head; the cost follows the number of distinct heads in the batch."""
        num_rows = tf.shape(features)[0]
        use_per_row = tf.cast(num_rows, tf.int64) * self.per_row_floats <= PER_ROW_GATHER_MAX_FLOATS
        out = tf.cond(
            use_per_row,
            lambda: self.per_row(features, locals_),
            lambda: _grouped(features, locals_, self.single, self.width),
        )
        return _pad(out, self.max_width)


class _KerasHead:
    """A head of any other architecture, called as a Keras model on its own variables."""

    def __init__(self, model: keras.Model, module: tf.Module, index: int, max_width: int) -> None:
        self._model = model  # kept out of tf.Module tracking: see _Untracked.
        self.max_width = max_width
        self.width = int(model.outputs[0].shape[-1])
        self.per_row_floats = 0
        setattr(module, f"group{index}_variables", [v.value for v in model.variables])

    def single(self, features: tf.Tensor, local: tf.Tensor) -> tf.Tensor:
        del local
        return tf.cast(self._model(features, training=False), tf.float32)

    def rows(self, features: tf.Tensor, locals_: tf.Tensor) -> tf.Tensor:
        return _pad(self.single(features, None), self.max_width)


def _member_input_width(member: keras.Model | PackedDenseHead) -> int:
    if isinstance(member, PackedDenseHead):
        return member.input_width
    return int(member.inputs[0].shape[1])


def _group_key(head: keras.Model | PackedDenseHead, task_id: int) -> tuple:
    """Heads with the same key are stacked together: Dense chains of the same steps and input."""
    if isinstance(head, PackedDenseHead):
        return ("dense", head.steps, head.input_width)
    steps = dense_chain_steps(head)
    if steps is None:
        return ("keras", task_id)
    return ("dense", steps, _member_input_width(head))


def _build_module(
    backbone: keras.Model, heads: Sequence[AssemblyHead], manifest: dict[str, Any], trunk: Trunk | None = None
) -> tuple[tf.Module, dict[str, Any]]:
    module = tf.Module()
    branched = None
    if any(head.branch is not None for head in heads):
        # The trunk segments hold the backbone's weights (once); the backbone model is not captured.
        plan = plan_branches([head.branch for head in heads], trunk)
        branched = BranchedFeatures(trunk, plan, module, manifest["backbone"]["feature_shape"])
        module.backbone_resources = branched.resources()
    else:
        module.backbone_variables = [v.value for v in backbone.variables]
        module.backbone_resources = backbone_resources(backbone)
    max_width = manifest["serving"]["max_width"]
    num_heads = len(heads)

    # Group heads by architecture; the first head of each group fixes its index.
    group_keys: list[Any] = []
    group_members: list[list[int]] = []
    position_of: dict[tuple, int] = {}
    for task_id, head in enumerate(heads):
        key = _group_key(head.model, task_id)
        if key in position_of:
            group_members[position_of[key]].append(task_id)
        else:
            position_of[key] = len(group_keys)
            group_keys.append(key)
            group_members.append([task_id])
    groups: list[Any] = []
    group_of = np.zeros(num_heads, np.int32)
    local_of = np.zeros(num_heads, np.int32)
    for index, (key, members) in enumerate(zip(group_keys, group_members, strict=True)):
        models = [heads[task_id].model for task_id in members]
        if key[0] == "dense":
            groups.append(_DenseChain(models, list(key[1]), module, index, max_width))
        else:
            groups.append(_KerasHead(models[0], module, index, max_width))
        del models
        for local, task_id in enumerate(members):
            group_of[task_id] = index
            local_of[task_id] = local
    widths = np.array([entry["output_width"] for entry in manifest["heads"]], np.int32)

    entries = serving_inputs(backbone)
    input_specs = [tf.TensorSpec(entry["shape"], tf.as_dtype(entry["dtype"]), entry["name"]) for entry in entries]
    feature_shape = manifest["backbone"]["feature_shape"]
    feature_spec = tf.TensorSpec([None, *feature_shape], tf.float32, "features")

    def keras_inputs(inputs: Sequence[tf.Tensor]) -> Any:
        if len(entries) == 1:
            return inputs[0]
        return {entry["keras_name"]: tensor for entry, tensor in zip(entries, inputs, strict=True)}

    if branched is None:

        @tf.function(input_signature=input_specs)
        def features_fn(*inputs: tf.Tensor) -> tf.Tensor:
            run = lambda: tf.cast(backbone(keras_inputs(inputs), training=False), tf.float32)  # noqa: E731
            return unless_empty(run, tf.shape(inputs[0])[0], backbone.outputs[0])

    else:

        @tf.function(input_signature=[*input_specs, tf.TensorSpec([None], tf.int32, TASK_ID_KEY)])
        def features_fn(*args: tf.Tensor) -> tf.Tensor:
            """Each row's features through its task's path (checked task ids only)."""
            return branched(keras_inputs(args[:-1]), args[-1])

    def checked(task_id: tf.Tensor, num_rows: tf.Tensor) -> tf.Tensor:
        # tf.gather returns zeros for bad indices on GPU: check explicitly, before any gather.
        message = f"task_id out of range: expected 0 <= task_id < {num_heads}"
        checks = [
            tf.debugging.assert_equal(
                tf.shape(task_id)[0],
                num_rows,
                message="task_id must have exactly one entry per input row",
            ),
            tf.debugging.assert_greater_equal(task_id, 0, message=message),
            tf.debugging.assert_less(task_id, num_heads, message=message),
        ]
        with tf.control_dependencies(checks):
            return tf.identity(task_id)

    @tf.function(input_signature=[feature_spec, tf.TensorSpec([None], tf.int32, TASK_ID_KEY)])
    def head_stage(features: tf.Tensor, task_id: tf.Tensor) -> tf.Tensor:
        task_id = checked(task_id, tf.shape(features)[0])
        locals_ = tf.gather(tf.constant(local_of), task_id)
        if len(groups) == 1:
            return groups[0].rows(features, locals_)
        group_ids = tf.gather(tf.constant(group_of), task_id)
        row_parts, out_parts = [], []
        for index, group in enumerate(groups):
            rows = tf.cast(tf.where(tf.equal(group_ids, index))[:, 0], tf.int32)
            out_parts.append(
                tf.cond(
                    tf.size(rows) > 0,
                    lambda g=group, r=rows: g.rows(tf.gather(features, r), tf.gather(locals_, r)),
                    lambda: tf.zeros([0, max_width], tf.float32),
                )
            )
            row_parts.append(rows)
        return tf.scatter_nd(
            tf.concat(row_parts, 0)[:, None],
            tf.concat(out_parts, 0),
            tf.stack([tf.shape(features)[0], max_width]),
        )

    def serve(inputs: Sequence[tf.Tensor], task_id: tf.Tensor) -> dict[str, tf.Tensor]:
        # head_stage checks task_id (range and length) before any gather; when a check fails
        # the whole call fails, so the width lookup below can never return silent zeros.
        if branched is None:
            features = features_fn(*inputs)
        else:
            features = features_fn(*inputs, checked(task_id, tf.shape(inputs[0])[0]))
        outputs = head_stage(features, task_id)
        with tf.control_dependencies([outputs]):
            widths_out = tf.gather(tf.constant(widths), task_id)
        return {OUTPUTS_KEY: outputs, WIDTH_KEY: widths_out}

    @tf.function(input_signature=[*input_specs, tf.TensorSpec([None], tf.int32, TASK_ID_KEY)])
    def serving_default(*args: tf.Tensor) -> dict[str, tf.Tensor]:
        return serve(args[:-1], args[-1])

    slugs = [entry["task"] for entry in manifest["heads"]]
    module.task_table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(slugs, tf.string), tf.constant(np.arange(num_heads, dtype=np.int32))
        ),
        default_value=-1,
    )

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, TASK_KEY)])
    def task_ids(task: tf.Tensor) -> tf.Tensor:
        """The task_id of each slug, -1 for an unknown one."""
        return module.task_table.lookup(task)

    @tf.function(input_signature=[*input_specs, tf.TensorSpec([None], tf.string, TASK_KEY)])
    def serving_by_task(*args: tf.Tensor) -> dict[str, tf.Tensor]:
        task = args[-1]
        task_id = task_ids(task)
        unknown = tf.boolean_mask(task, task_id < 0)
        # Unknown slugs fail the call and are named in the error; they never map to a head.
        check = tf.debugging.Assert(
            tf.equal(tf.size(unknown), 0),
            [
                "unknown task slug(s):",
                unknown,
                f"expected one of the assembly's {num_heads} task slugs (the manifest lists them)",
            ],
            summarize=10,
        )
        with tf.control_dependencies([check]):
            task_id = tf.identity(task_id)
        return serve(args[:-1], task_id)

    module.features = features_fn
    module.head_stage = head_stage
    module.task_ids = task_ids
    signatures: dict[str, Any] = {SERVING_KEY: serving_default, BY_TASK_KEY: serving_by_task}

    if not manifest["serving"]["per_head_signatures"]:
        return module, signatures
    if branched is not None:
        for task_id, head in enumerate(heads):
            signatures[head.task] = _branched_head_signature(serve, task_id, int(widths[task_id]), input_specs)
        return module, signatures
    single_fns: dict[int, Callable] = {}
    for index, group in enumerate(groups):
        single_fns[index] = _single_head_function(group, features_fn, input_specs)
        setattr(module, f"group{index}_single", single_fns[index])
    for task_id, head in enumerate(heads):
        signatures[head.task] = _head_signature(single_fns[int(group_of[task_id])], int(local_of[task_id]), input_specs)
    return module, signatures


def _single_head_function(group: Any, features_fn: Callable, input_specs: list[tf.TensorSpec]) -> Any:
    @tf.function(input_signature=[*input_specs, tf.TensorSpec([], tf.int32, "local")])
    def single_fn(*args: tf.Tensor) -> tf.Tensor:
        return group.single(features_fn(*args[:-1]), args[-1])

    return single_fn


def _head_signature(single_fn: Any, local: int, input_specs: list[tf.TensorSpec]) -> Any:
    @tf.function(input_signature=input_specs)
    def head_signature(*inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {OUTPUTS_KEY: single_fn(*inputs, tf.constant(local, tf.int32))}

    return head_signature


def _branched_head_signature(serve: Callable, task_id: int, width: int, input_specs: list[tf.TensorSpec]) -> Any:
    @tf.function(input_signature=input_specs)
    def head_signature(*inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        rows = tf.shape(inputs[0])[0]
        return {OUTPUTS_KEY: serve(inputs, tf.fill([rows], tf.constant(task_id, tf.int32)))[OUTPUTS_KEY][:, :width]}

    return head_signature


def _grouped(features: tf.Tensor, locals_: tf.Tensor, single: Callable, width: int) -> tf.Tensor:
    """Compute rows task by task: one head evaluation per distinct task in the batch."""
    unique, index, counts = tf.unique_with_counts(locals_)
    order = tf.argsort(index, stable=True)
    sorted_features = tf.gather(features, order)
    starts = tf.cumsum(counts, exclusive=True)
    num_unique = tf.size(unique)
    parts = tf.TensorArray(tf.float32, size=num_unique, infer_shape=False, element_shape=tf.TensorShape([None, width]))

    def body(i: tf.Tensor, parts: tf.TensorArray) -> tuple:
        rows = tf.slice(
            sorted_features,
            tf.stack([starts[i]] + [0] * (features.shape.rank - 1)),
            tf.stack([counts[i]] + [-1] * (features.shape.rank - 1)),
        )
        return i + 1, parts.write(i, tf.cast(single(rows, unique[i]), tf.float32))

    _, parts = tf.while_loop(lambda i, _: i < num_unique, body, [tf.constant(0), parts])
    sorted_out = tf.reshape(parts.concat(), [-1, width])
    return tf.gather(sorted_out, tf.math.invert_permutation(order))


def _pad(outputs: tf.Tensor, max_width: int) -> tf.Tensor:
    width = outputs.shape[-1]
    outputs = tf.cast(outputs, tf.float32)
    if width == max_width:
        return outputs
    return tf.pad(outputs, [[0, 0], [0, max_width - width]])


def _activation(name: str) -> Callable[[tf.Tensor], tf.Tensor]:
    if name == "linear":
        return lambda x: x
    function = keras.activations.get(name)
    return lambda x: function(x)


def _manifest_json(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"
