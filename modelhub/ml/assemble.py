"""Assemble one backbone and many heads into a single SavedModel ``f(inputs, task_id)``.

The SavedModel is a ``tf.Module`` that tracks the backbone's raw variables once (not
the Keras model object, which breaks the TF1/C++ loader, and not ``Model.export``,
which stores every variable twice). Heads that share an architecture (a chain of
Dense layers) are stacked into ``[num_heads, ...]`` variables; other heads keep their
own variables. Each row of a batch runs only its own head: narrow heads gather one
kernel per row, wide heads are computed once per distinct task in the batch. Every
build is verified against the component models before it is offered.
"""

from __future__ import annotations

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

from modelhub.ml.errors import AssemblyError, AssemblyVerificationError, FeatureShapeMismatchError
from modelhub.ml.inspect import input_name
from modelhub.ml.split import VERIFY_RTOL, check_close, check_head_compatible, probe_inputs_for

FORMAT_VERSION = 1
MANIFEST_PATH = "assets/manifest.json"
SERVING_KEY = "serving_default"
INPUTS_KEY = "inputs"
TASK_ID_KEY = "task_id"
OUTPUTS_KEY = "outputs"
WIDTH_KEY = "output_width"
VERIFY_ATOL = VERIFY_RTOL  # scaled: max abs diff <= 1e-5 * max(1, max |reference|)
RESERVED_INPUT_NAMES = frozenset({TASK_ID_KEY, "task"})
# A batch may gather one kernel copy per row while that costs at most this many floats
# (16 MiB); above it, rows are grouped and each distinct task's kernel is read once.
PER_ROW_GATHER_MAX_FLOATS = 4 * 1024 * 1024
STACKABLE_ACTIVATIONS = frozenset(
    {"linear", "relu", "relu6", "softmax", "sigmoid", "tanh", "gelu", "elu", "selu", "softplus", "silu", "swish"}
)
SIGNATURE_KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")


@dataclass(frozen=True)
class AssemblyHead:
    """One head to assemble.

    Attributes:
        task: the task slug; it names the head's own signature.
        model: the head, a Keras model whose single input is the backbone's features.
        version: the head version number.
        sha256: the head artifact's checksum (recorded in the manifest).
        labels: class labels, or None.
    """

    task: str
    model: keras.Model
    version: int
    sha256: str
    labels: list[str] | None = field(default=None)


def build_assembly(
    *,
    backbone: keras.Model,
    heads: Sequence[AssemblyHead],
    export_dir: str | os.PathLike[str],
    backbone_info: dict[str, Any],
    probe_inputs: Any = None,
    verify: bool = True,
    per_head_signatures: bool = True,
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
        per_head_signatures: add one signature per task slug (default). Each one captures
            every backbone variable handle, which costs ~25 KB of graph and ~0.4 s of
            tracing per head; pass False for very many heads to keep only serving_default.

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
    manifest = build_manifest(backbone=backbone, heads=heads, backbone_info=backbone_info)
    manifest["serving"]["per_head_signatures"] = per_head_signatures
    module, signatures = _build_module(backbone, heads, manifest)
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".assembly-", dir=export_dir.parent))
    try:
        tf.saved_model.save(module, str(staging), signatures=signatures)
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
        verification = verify_assembly(export_dir, backbone, [head.model for head in heads], probe_inputs)
    return {
        "export_dir": str(export_dir),
        "manifest": manifest,
        "size_bytes": directory_bytes(export_dir),
        "verification": verification,
    }


def build_manifest(
    *, backbone: keras.Model, heads: Sequence[AssemblyHead], backbone_info: dict[str, Any]
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
        if not SIGNATURE_KEY_PATTERN.fullmatch(head.task) or head.task == SERVING_KEY:
            raise AssemblyError(
                f"Expected a task slug of letters, digits, '-' and '_' (not '{SERVING_KEY}'), "
                f"received '{head.task}'. Rename the task."
            )
        if head.task in seen:
            raise AssemblyError(f"Expected each task once, received '{head.task}' twice. Pick one head version.")
        seen.add(head.task)
        try:
            check_head_compatible(
                head.model,
                feature_shape,
                backbone_label=f"backbone '{backbone_info['name']}' v{backbone_info['version']}",
            )
        except FeatureShapeMismatchError as error:
            raise AssemblyError(f"Head for task '{head.task}': {error}") from error
        if len(head.model.outputs) != 1:
            raise AssemblyError(
                f"Expected head '{head.task}' to have one output, it has "
                f"{len(head.model.outputs)}. Split it into one head per output."
            )
        out_shape = head.model.outputs[0].shape[1:]
        if len(out_shape) != 1 or out_shape[0] is None:
            raise AssemblyError(
                f"Expected head '{head.task}' to output a vector [batch, width], it outputs "
                f"{[None] + list(out_shape)}. Add a Flatten or Reshape layer to the head."
            )
        entries.append(
            {
                "task_id": task_id,
                "task": head.task,
                "signature": head.task,
                "version": int(head.version),
                "sha256": head.sha256,
                "output_width": int(out_shape[0]),
                "labels": list(head.labels) if head.labels is not None else None,
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
    return {
        "format_version": FORMAT_VERSION,
        "backbone": backbone_entry,
        "serving": {
            "signature": SERVING_KEY,
            "inputs": [entry["name"] for entry in described] + [TASK_ID_KEY],
            "outputs": [OUTPUTS_KEY, WIDTH_KEY],
            "max_width": max(entry["output_width"] for entry in entries),
        },
        "heads": entries,
    }


def verify_assembly(
    export_dir: str | os.PathLike[str],
    backbone: keras.Model,
    heads: Sequence[keras.Model],
    probe_inputs: Any = None,
    *,
    rtol: float = VERIFY_ATOL,
) -> dict[str, Any]:
    """Check a written assembly against ``head(backbone(x))`` for every head.

    Runs ``serving_default`` on one mixed batch (every probe row for every task, rows
    shuffled) and every per-head signature, and checks padding and ``output_width``.
    A head passes when its max abs difference is at most ``rtol * max(1, max |reference|)``:
    float noise grows with the size of the values (a ResNet on 0-255 inputs differs by
    ~1e-5 in absolute terms), so the tolerance does too.

    Args:
        export_dir: the SavedModel directory.
        backbone: the backbone Keras model.
        heads: head models in task_id order.
        probe_inputs: backbone inputs (an array, or a dict by input name for several
            inputs); deterministic ones when None.
        rtol: the tolerance relative to ``max(1, max |reference|)``.

    Returns:
        ``{"max_abs_diff": float, "max_rel_diff": float, "heads": [{"task_id", "task",
        "max_abs_diff", "max_rel_diff"}], "num_probe_rows": int}``.

    Raises:
        AssemblyVerificationError: a head differs by more than the tolerance, or padding /
            widths are wrong; the message names the task and both figures.

    Example:
        >>> verify_assembly("out/asm", bb, [head_a, head_b])["max_rel_diff"] < 1e-5
        True
    """
    if probe_inputs is None:
        probe_inputs = probe_inputs_for(backbone, num_rows=2)
    by_name = _probe_by_serving_name(backbone, probe_inputs)
    manifest = json.loads((Path(export_dir) / MANIFEST_PATH).read_text())
    loaded = tf.saved_model.load(str(export_dir))
    serving = loaded.signatures[SERVING_KEY]
    num_rows = int(next(iter(by_name.values())).shape[0])
    num_heads = len(heads)
    # One mixed batch, every task's probe rows shuffled together. The reference runs the backbone
    # on the very same batch: CPU kernels round differently for other batch sizes, and that float
    # noise is not the assembly's doing.
    permutation = np.random.default_rng(0).permutation(num_rows * num_heads)
    task_of_row = np.repeat(np.arange(num_heads, dtype=np.int32), num_rows)[permutation]
    mixed = {name: np.concatenate([array] * num_heads, axis=0)[permutation] for name, array in by_name.items()}
    result = serving(**{name: tf.constant(array) for name, array in mixed.items()}, task_id=tf.constant(task_of_row))
    outputs = result[OUTPUTS_KEY].numpy()
    widths = result[WIDTH_KEY].numpy()
    # The reference runs as a graph, as a SavedModel always does: on CPU, graph-mode op fusions
    # round differently from eager execution (EfficientNetB0: 1.7e-5 relative, the model alone).
    reference_backbone = tf.function(lambda inputs: backbone(inputs, training=False))
    mixed_features = reference_backbone(_probe_for_keras(backbone, mixed))
    probe_features = None
    report = []
    overall_abs = overall_rel = 0.0
    for task_id, head in enumerate(heads):
        entry = manifest["heads"][task_id]
        width = entry["output_width"]
        rows = np.flatnonzero(task_of_row == task_id)
        expected = np.asarray(head(tf.gather(mixed_features, rows), training=False))
        got = outputs[rows]
        if not np.all(widths[rows] == width):
            raise AssemblyVerificationError(
                f"Expected output_width {width} for task '{entry['task']}', got {sorted(set(widths[rows].tolist()))}."
            )
        if np.any(got[:, width:] != 0):
            raise AssemblyVerificationError(
                f"Expected zero padding beyond width {width} for task '{entry['task']}', found "
                f"max abs {float(np.max(np.abs(got[:, width:]))):.3g}."
            )
        what = f"the assembly's task '{entry['task']}' (task_id {task_id})"
        figures = check_close(expected, got[:, :width], what=what, error=AssemblyVerificationError, rtol=rtol)
        if manifest["serving"].get("per_head_signatures", True):
            if probe_features is None:
                probe_features = reference_backbone(_probe_for_keras(backbone, by_name))
            single = loaded.signatures[entry["signature"]](**{name: tf.constant(a) for name, a in by_name.items()})
            single_figures = check_close(
                np.asarray(head(probe_features, training=False)),
                single[OUTPUTS_KEY].numpy(),
                what=f"signature '{entry['signature']}'",
                error=AssemblyVerificationError,
                rtol=rtol,
            )
            if single_figures["max_abs_diff"] > figures["max_abs_diff"]:
                figures = single_figures
        overall_abs = max(overall_abs, figures["max_abs_diff"])
        overall_rel = max(overall_rel, figures["max_rel_diff"])
        report.append(
            {
                "task_id": task_id,
                "task": entry["task"],
                "max_abs_diff": figures["max_abs_diff"],
                "max_rel_diff": figures["max_rel_diff"],
            }
        )
    return {
        "max_abs_diff": overall_abs,
        "max_rel_diff": overall_rel,
        "rtol": rtol,
        "heads": report,
        "num_probe_rows": num_rows,
    }


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
        self, models: list[keras.Model], steps: list[tuple], module: tf.Module, index: int, max_width: int
    ) -> None:
        self.steps = steps
        self.max_width = max_width
        self.width = steps_width(steps)
        self.kernels: list[tf.Variable] = []
        self.biases: list[tf.Variable | None] = []
        per_row = 0
        dense_layers = [_dense_layers(model) for model in models]
        dense_steps = [step for step in steps if step[0] == "dense"]
        for dense_index, step in enumerate(dense_steps):
            layers = [per_model[dense_index] for per_model in dense_layers]
            stacked_kernel = np.stack([keras.ops.convert_to_numpy(lay.kernel) for lay in layers])
            kernel = tf.Variable(stacked_kernel, trainable=False, name=f"group{index}_dense{dense_index}_kernel")
            per_row += int(np.prod(stacked_kernel.shape[1:]))
            bias = None
            if step[2]:
                stacked_bias = np.stack([keras.ops.convert_to_numpy(lay.bias) for lay in layers])
                bias = tf.Variable(stacked_bias, trainable=False, name=f"group{index}_dense{dense_index}_bias")
            self.kernels.append(kernel)
            self.biases.append(bias)
        self.per_row_floats = per_row
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


def steps_width(steps: list[tuple]) -> int:
    """Return the output width of a Dense chain description."""
    return [step for step in steps if step[0] == "dense"][-1][1]


def _build_module(
    backbone: keras.Model, heads: Sequence[AssemblyHead], manifest: dict[str, Any]
) -> tuple[tf.Module, dict[str, Any]]:
    module = tf.Module()
    module.backbone_variables = [v.value for v in backbone.variables]
    module.backbone_resources = backbone_resources(backbone)
    max_width = manifest["serving"]["max_width"]
    num_heads = len(heads)

    # Group heads by architecture; the first head of each group fixes its index.
    group_keys: list[Any] = []
    group_members: list[list[int]] = []
    for task_id, head in enumerate(heads):
        steps = _dense_chain_steps(head.model)
        key = ("dense", tuple(steps)) if steps is not None else ("keras", task_id)
        if key in group_keys:
            group_members[group_keys.index(key)].append(task_id)
        else:
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
        for local, task_id in enumerate(members):
            group_of[task_id] = index
            local_of[task_id] = local
    widths = np.array([entry["output_width"] for entry in manifest["heads"]], np.int32)

    entries = serving_inputs(backbone)
    input_specs = [tf.TensorSpec(entry["shape"], tf.as_dtype(entry["dtype"]), entry["name"]) for entry in entries]
    feature_shape = manifest["backbone"]["feature_shape"]
    feature_spec = tf.TensorSpec([None, *feature_shape], tf.float32, "features")

    @tf.function(input_signature=input_specs)
    def features_fn(*inputs: tf.Tensor) -> tf.Tensor:
        if len(entries) == 1:
            return tf.cast(backbone(inputs[0], training=False), tf.float32)
        named = {entry["keras_name"]: tensor for entry, tensor in zip(entries, inputs, strict=True)}
        return tf.cast(backbone(named, training=False), tf.float32)

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

    @tf.function(input_signature=[*input_specs, tf.TensorSpec([None], tf.int32, TASK_ID_KEY)])
    def serving_default(*args: tf.Tensor) -> dict[str, tf.Tensor]:
        # head_stage checks task_id (range and length) before any gather; when a check fails
        # the whole call fails, so the width lookup below can never return silent zeros.
        task_id = args[-1]
        outputs = head_stage(features_fn(*args[:-1]), task_id)
        with tf.control_dependencies([outputs]):
            widths_out = tf.gather(tf.constant(widths), task_id)
        return {OUTPUTS_KEY: outputs, WIDTH_KEY: widths_out}

    module.features = features_fn
    module.head_stage = head_stage
    signatures: dict[str, Any] = {SERVING_KEY: serving_default}

    single_fns: dict[int, Callable] = {}
    for index, group in enumerate(groups):
        single_fns[index] = _single_head_function(group, features_fn, input_specs)
        setattr(module, f"group{index}_single", single_fns[index])
    for task_id, head in enumerate(heads):
        if not manifest["serving"]["per_head_signatures"]:
            break
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


def _head_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def _dense_layers(model: keras.Model) -> list[keras.layers.Dense]:
    from modelhub.ml.inspect import graph_nodes

    return [layer for layer, _ in graph_nodes(model) if isinstance(layer, keras.layers.Dense)]


def _dense_chain_steps(model: keras.Model) -> list[tuple] | None:
    """Describe ``model`` as a chain of Dense/Activation steps, or None if it is not one."""
    if len(model.inputs) != 1 or len(model.outputs) != 1 or len(model.inputs[0].shape) != 2:
        return None
    from modelhub.ml.inspect import graph_nodes

    nodes = [(layer, node) for layer, node in graph_nodes(model) if not isinstance(layer, keras.layers.InputLayer)]
    previous = model.inputs[0]
    steps: list[tuple] = []
    for layer, node in nodes:
        if len(node.input_tensors) != 1 or node.input_tensors[0] is not previous:
            return None
        previous = node.output_tensors[0]
        if isinstance(layer, keras.layers.Dense):
            activation = keras.activations.serialize(layer.activation)
            if not isinstance(activation, str) or activation not in STACKABLE_ACTIVATIONS:
                return None
            if str(layer.kernel.dtype) != "float32" or getattr(layer, "lora_enabled", False):
                return None
            steps.append(("dense", int(layer.units), bool(layer.use_bias), activation))
        elif isinstance(layer, keras.layers.Activation):
            activation = keras.activations.serialize(layer.activation)
            if not isinstance(activation, str) or activation not in STACKABLE_ACTIVATIONS:
                return None
            steps.append(("activation", activation))
        elif isinstance(layer, keras.layers.Dropout):
            continue
        else:
            return None
    if previous is not model.outputs[0] or not any(step[0] == "dense" for step in steps):
        return None
    return steps


def _manifest_json(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"
