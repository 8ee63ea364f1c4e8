"""The export graph: ``f(inputs..., task_id) -> {outputs, output_width}`` made of ops ONNX and LiteRT support.

The assembled SavedModel's head stage and branches use ``tf.while_loop`` over TensorArrays
(which tf2onnx turns into ``TensorListConcatV2``, an op ONNX Runtime refuses) and a
``StaticHashTable`` for task slugs (a Flex op in LiteRT). This module builds the same
function again for the converters, from the components:

- the backbone once (or the trunk segments, each on the rows still on it, when heads own branches);
- each distinct branch on its own rows only (``Where`` + ``Gather``), results put back with ``ScatterNd``;
- each group of Dense-chain heads as stacked, zero-padded kernels ``[T, F, W]``: a row gathers its
  own task's kernel and runs a batched MatMul (``[B, 1, F] x [B, F, W]``), so a row computes only its
  head, never all heads; other heads (any Keras architecture) run on their own rows only;
- ``output_width`` by a ``Gather`` from a constant table. No hash table: the slug table stays out.

String inputs (``TextVectorization``) and lookup tables are refused (:func:`check_exportable`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from modelhub.ml.assembly.head_stage import group_key
from modelhub.ml.assembly.manifest import OUTPUTS_KEY, TASK_ID_KEY, WIDTH_KEY, AssemblyHead, serving_inputs
from modelhub.ml.assembly.trunk import plan_branches
from modelhub.ml.branches import Trunk
from modelhub.ml.errors import ExportError
from modelhub.ml.head_weights import PackedDenseHead, dense_chain_of

LOOKUP_LAYERS = (keras.layers.TextVectorization, keras.layers.StringLookup, keras.layers.IntegerLookup)


@dataclass
class ExportGraph:
    """The functions to convert and the ``tf.Module`` tracking their variables.

    Attributes:
        module: tracks every variable the functions read (raw variables, not Keras models).
        serving: ``serving(*inputs, task_id) -> {"outputs", "output_width"}`` (a ``tf.function``).
        per_task: slug -> ``f(*inputs) -> {"outputs": [B, width]}``, when asked.
        input_names: the export's backbone input names, in order (``task_id`` follows).
        widths: each task's output width; ``max_width`` the padded width.
        notes: what each part of the graph does and costs (for the report).
    """

    module: tf.Module
    serving: Any
    input_names: list[str]
    widths: np.ndarray
    max_width: int
    per_task: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def check_exportable(backbone: keras.Model, heads: Sequence[AssemblyHead], fmt: str) -> None:
    """Raise ExportError for string inputs and lookup tables, which neither converter can take."""
    for entry in serving_inputs(backbone):
        if entry["dtype"] == "string":
            raise ExportError(
                f"Cannot export to {fmt}: backbone input '{entry['keras_name']}' is a string tensor. "
                "ONNX and LiteRT (builtin ops) have no string ops or hash tables for a TextVectorization "
                "vocabulary. Export from the vectorizer's output instead: cut the backbone after its "
                "TextVectorization layer, assemble on the token ids, and ship the vocabulary "
                "(layer.get_vocabulary()) beside the exported model to tokenize before calling it."
            )
    models = [("the backbone", backbone)] + [
        (f"head '{head.task}'", head.model) for head in heads if not isinstance(head.model, PackedDenseHead)
    ]
    models += [(f"the branch of '{head.task}'", head.branch.model) for head in heads if head.branch is not None]
    for owner, model in models:
        for layer in model._flatten_layers(include_self=False, recursive=True):  # noqa: SLF001
            if isinstance(layer, LOOKUP_LAYERS):
                raise ExportError(
                    f"Cannot export to {fmt}: layer '{layer.name}' ({type(layer).__name__}) in {owner} holds a "
                    "lookup table, which ONNX and LiteRT builtin ops cannot hold. Export from the layer's output "
                    "(token ids) and ship its vocabulary beside the exported model."
                )


def build_export_graph(
    *,
    backbone: keras.Model,
    heads: Sequence[AssemblyHead],
    trunk: Trunk | None,
    widths: Sequence[int],
    per_task_signatures: bool = False,
) -> ExportGraph:
    """Build the export functions for ``heads`` (task_id order) on ``backbone`` (see the module doc)."""
    module = tf.Module()
    entries = serving_inputs(backbone)
    input_specs = [tf.TensorSpec(e["shape"], tf.as_dtype(e["dtype"]), e["name"]) for e in entries]
    widths_array = np.asarray(widths, np.int32)
    max_width = int(widths_array.max())
    notes: list[str] = []

    def keras_inputs(inputs: Sequence[tf.Tensor]) -> Any:
        if len(entries) == 1:
            return inputs[0]
        return {entry["keras_name"]: tensor for entry, tensor in zip(entries, inputs, strict=True)}

    if any(head.branch is not None for head in heads):
        if trunk is None:
            raise ExportError("Expected the trunk (the backbone cut at the branch points) for heads with branches.")
        features_of = _branched_features(module, trunk, heads, notes)
    else:
        module.backbone_variables = [v.value for v in backbone.variables]
        notes.append("Backbone: run once per call on every row.")

        def features_of(inputs: Any, task_id: tf.Tensor) -> tf.Tensor:
            del task_id
            return tf.cast(backbone(inputs, training=False), tf.float32)

    stage = _HeadStage(module, heads, max_width, notes)

    @tf.function(input_signature=[*input_specs, tf.TensorSpec([None], tf.int32, TASK_ID_KEY)])
    def serving(*args: tf.Tensor) -> dict[str, tf.Tensor]:
        task_id = args[-1]
        features = features_of(keras_inputs(args[:-1]), task_id)
        return {OUTPUTS_KEY: stage(features, task_id), WIDTH_KEY: tf.gather(tf.constant(widths_array), task_id)}

    graph = ExportGraph(module, serving, [e["name"] for e in entries], widths_array, max_width, notes=notes)
    if per_task_signatures:
        for task_id, head in enumerate(heads):
            graph.per_task[head.task] = _task_function(serving, task_id, int(widths_array[task_id]), input_specs)
    return graph


def _task_function(serving: Any, task_id: int, width: int, input_specs: list[tf.TensorSpec]) -> Any:
    @tf.function(input_signature=input_specs)
    def one_task(*inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        task = tf.fill([tf.shape(inputs[0])[0]], tf.constant(task_id, tf.int32))
        return {OUTPUTS_KEY: serving(*inputs, task)[OUTPUTS_KEY][:, :width]}

    return one_task


def _rows_where(condition: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.where(condition)[:, 0], tf.int32)


class _HeadStage:
    """Heads grouped as the SavedModel groups them; each row runs only its own head."""

    def __init__(self, module: tf.Module, heads: Sequence[AssemblyHead], max_width: int, notes: list[str]) -> None:
        self.max_width = max_width
        keys: dict[tuple, int] = {}
        members: list[list[int]] = []
        for task_id, head in enumerate(heads):
            key = group_key(head.model, task_id)
            if key not in keys:
                keys[key] = len(members)
                members.append([])
            members[keys[key]].append(task_id)
        self.group_of = np.zeros(len(heads), np.int32)
        self.local_of = np.zeros(len(heads), np.int32)
        self.groups: list[Any] = []
        variables: list[Any] = []
        dense_heads = keras_heads = 0
        for index, (key, tasks) in enumerate(zip(keys, members, strict=True)):
            for local, task_id in enumerate(tasks):
                self.group_of[task_id], self.local_of[task_id] = index, local
            if key[0] == "dense":
                group = _StackedDense([heads[t].model for t in tasks], list(key[1]), index)
                dense_heads += len(tasks)
            else:
                group = _KerasGroup(heads[tasks[0]].model)
                keras_heads += 1
            variables.extend(group.variables)
            self.groups.append(group)
        module.head_variables = variables
        notes.append(
            f"Heads: {dense_heads} Dense-chain heads in {sum(isinstance(g, _StackedDense) for g in self.groups)} "
            "stacked group(s): each row gathers its own task's kernels [F, W] from [T, F, W] and runs a batched "
            "MatMul, so a row costs one head (B x F x W floats gathered per layer), never all heads."
            + (f" {keras_heads} other head(s) run as their own graph on their rows only." if keras_heads else "")
        )
        if len(self.groups) > 1:
            notes.append(
                f"{len(self.groups)} head groups: each group runs on its own rows (Where + Gather), "
                "results put back with ScatterNd."
            )

    def __call__(self, features: tf.Tensor, task_id: tf.Tensor) -> tf.Tensor:
        locals_ = tf.gather(tf.constant(self.local_of), task_id)
        if len(self.groups) == 1:
            return _pad(self.groups[0](features, locals_), self.max_width)
        group_ids = tf.gather(tf.constant(self.group_of), task_id)
        rows_parts, out_parts = [], []
        for index, group in enumerate(self.groups):
            rows = _rows_where(tf.equal(group_ids, index))
            out = group(tf.gather(features, rows), tf.gather(locals_, rows))
            rows_parts.append(rows)
            out_parts.append(_pad(out, self.max_width))
        return tf.scatter_nd(
            tf.concat(rows_parts, 0)[:, None],
            tf.concat(out_parts, 0),
            tf.stack([tf.shape(features)[0], self.max_width]),
        )


class _StackedDense:
    """Dense chains of the same steps: ``kernels[i]`` is ``[T, in, out]``, a row gathers its task's slice."""

    def __init__(self, members: list[Any], steps: list[tuple], index: int) -> None:
        self.steps = steps
        chains = [m.load() if isinstance(m, PackedDenseHead) else dense_chain_of(m) for m in members]
        self.kernels, self.biases = [], []
        for layer in range(len(chains[0].kernels)):
            kernel = np.stack([chain.kernels[layer] for chain in chains]).astype(np.float32)
            self.kernels.append(tf.Variable(kernel, trainable=False, name=f"group{index}_kernel{layer}"))
            bias = None
            if chains[0].biases[layer] is not None:
                values = np.stack([chain.biases[layer] for chain in chains]).astype(np.float32)
                bias = tf.Variable(values, trainable=False, name=f"group{index}_bias{layer}")
            self.biases.append(bias)
        del chains
        self.variables = [*self.kernels, *(b for b in self.biases if b is not None)]

    def __call__(self, features: tf.Tensor, locals_: tf.Tensor) -> tf.Tensor:
        hidden = features
        layer = 0
        for step in self.steps:
            if step[0] == "dense":
                kernels = tf.gather(self.kernels[layer], locals_)  # [B, in, out]
                hidden = tf.matmul(hidden[:, None, :], kernels)[:, 0, :]
                if self.biases[layer] is not None:
                    hidden = hidden + tf.gather(self.biases[layer], locals_)
                hidden = _activation(step[3], hidden)
                layer += 1
            else:
                hidden = _activation(step[1], hidden)
        return hidden


class _KerasGroup:
    """A head of another architecture: its Keras graph on its own rows."""

    def __init__(self, model: keras.Model) -> None:
        self._model = model
        self.variables = [v.value for v in model.variables]

    def __call__(self, features: tf.Tensor, locals_: tf.Tensor) -> tf.Tensor:
        del locals_
        return tf.cast(self._model(features, training=False), tf.float32)


def _branched_features(module: tf.Module, trunk: Trunk, heads: Sequence[AssemblyHead], notes: list[str]) -> Any:
    """Each row's features through its task's path: trunk segments on the rows still on them, branches on theirs."""
    plan = plan_branches([head.branch for head in heads], trunk)
    segments = list(trunk.segments)
    module.trunk_variables = [v.value for segment in segments for v in segment.variables]
    module.branch_variables = [v.value for branch in plan.branches for v in branch.model.variables]
    feature_shape = [int(d) for d in segments[-1].outputs[0].shape[1:]] if len(segments) > len(trunk.points) else None
    if feature_shape is None:
        feature_shape = [int(d) for d in plan.branches[0].model.outputs[0].shape[1:]]
    at_point = [[b for b, p in enumerate(plan.branch_point) if p == position] for position in range(len(trunk.points))]
    # Made inside the traced function: an eager tensor captured from outside becomes an ONNX input.
    point_of_task, branch_of_task = plan.point_of_task, plan.branch_of_task
    notes.append(
        f"Branches: {len(plan.branches)} distinct branch(es) at {len(trunk.points)} point(s). The trunk runs once, "
        "each segment on the rows still on it; each branch runs only on its own rows (Where + Gather), so a batch "
        "pays for the branches present in it; features are put back in row order with ScatterNd. Each branch is "
        "its own subgraph (no stacking), so the file holds every branch's weights."
    )

    def features_of(inputs: Any, task_id: tf.Tensor) -> tf.Tensor:
        num_rows = tf.shape(task_id)[0]
        point_of_row = tf.gather(tf.constant(point_of_task), task_id)
        branch_of_row = tf.gather(tf.constant(branch_of_task), task_id)
        hidden = segments[0](inputs, training=False)
        rows = tf.range(num_rows)
        row_parts, feature_parts = [], []
        for position in range(len(trunk.points)):
            here = tf.gather(branch_of_row, rows)
            for branch_index in at_point[position]:
                chosen = _rows_where(tf.equal(here, branch_index))
                out = plan.branches[branch_index].model(tf.gather(hidden, chosen), training=False)
                row_parts.append(tf.gather(rows, chosen))
                feature_parts.append(tf.cast(out, tf.float32))
            onward = _rows_where(tf.gather(point_of_row, rows) > position)
            rows, hidden = tf.gather(rows, onward), tf.gather(hidden, onward)
            if position + 1 < len(segments):
                hidden = segments[position + 1](hidden, training=False)
        if len(segments) > len(trunk.points):
            row_parts.append(rows)
            feature_parts.append(tf.cast(hidden, tf.float32))
        return tf.scatter_nd(
            tf.concat(row_parts, 0)[:, None],
            tf.concat(feature_parts, 0),
            tf.concat([[num_rows], tf.constant(feature_shape, tf.int32)], 0),
        )

    return features_of


def _pad(outputs: tf.Tensor, max_width: int) -> tf.Tensor:
    width = outputs.shape[-1]
    if width == max_width:
        return outputs
    return tf.pad(outputs, [[0, 0], [0, max_width - width]])


def _activation(name: str, values: tf.Tensor) -> tf.Tensor:
    if name == "linear":
        return values
    return keras.activations.get(name)(values)
