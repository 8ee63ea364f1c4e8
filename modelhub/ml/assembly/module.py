"""The ``tf.Module`` an assembly saves, and its signatures.

The module tracks the backbone's raw variables once (not the Keras model object, which
breaks the TF1/C++ loader, and not ``Model.export``, which stores every variable twice), or,
when heads own branches, the trunk segments and each branch once (:mod:`.trunk`). Its
functions: ``features`` (the backbone, or each row through its task's path), ``head_stage``
(:mod:`.head_stage`), ``task_ids`` (slug -> task id), and the signatures
``serving_default(inputs, task_id)``, ``serving_by_task(inputs, task)`` and, when asked,
one per task slug.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from modelhub.ml.assembly.backbone_graph import at_least_one_row, backbone_resources
from modelhub.ml.assembly.head_stage import DenseChain, KerasHead, group_key
from modelhub.ml.assembly.manifest import (
    BY_TASK_KEY,
    OUTPUTS_KEY,
    SERVING_KEY,
    TASK_ID_KEY,
    TASK_KEY,
    WIDTH_KEY,
    AssemblyHead,
    serving_inputs,
)
from modelhub.ml.assembly.trunk import BranchedFeatures, plan_branches
from modelhub.ml.branches import Trunk


def build_module(
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
        key = group_key(head.model, task_id)
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
            groups.append(DenseChain(models, list(key[1]), module, index, max_width))
        else:
            groups.append(KerasHead(models[0], module, index, max_width))
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

    # Every function below is plain TensorFlow (explicit tf.cond / tf.while_loop): autograph's
    # source conversion would only cost build time (~0.2-0.8 s for each function it converts).
    if branched is None:

        @tf.function(input_signature=input_specs, autograph=False)
        def features_fn(*inputs: tf.Tensor) -> tf.Tensor:
            run = lambda rows: tf.cast(backbone(keras_inputs(rows), training=False), tf.float32)  # noqa: E731
            return at_least_one_row(run, inputs)

    else:

        @tf.function(input_signature=[*input_specs, tf.TensorSpec([None], tf.int32, TASK_ID_KEY)], autograph=False)
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

    @tf.function(input_signature=[feature_spec, tf.TensorSpec([None], tf.int32, TASK_ID_KEY)], autograph=False)
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

    @tf.function(input_signature=[*input_specs, tf.TensorSpec([None], tf.int32, TASK_ID_KEY)], autograph=False)
    def serving_default(*args: tf.Tensor) -> dict[str, tf.Tensor]:
        return serve(args[:-1], args[-1])

    slugs = [entry["task"] for entry in manifest["heads"]]
    module.task_table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(slugs, tf.string), tf.constant(np.arange(num_heads, dtype=np.int32))
        ),
        default_value=-1,
    )

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, TASK_KEY)], autograph=False)
    def task_ids(task: tf.Tensor) -> tf.Tensor:
        """The task_id of each slug, -1 for an unknown one."""
        return module.task_table.lookup(task)

    @tf.function(input_signature=[*input_specs, tf.TensorSpec([None], tf.string, TASK_KEY)], autograph=False)
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
    @tf.function(input_signature=[*input_specs, tf.TensorSpec([], tf.int32, "local")], autograph=False)
    def single_fn(*args: tf.Tensor) -> tf.Tensor:
        return group.single(features_fn(*args[:-1]), args[-1])

    return single_fn


def _head_signature(single_fn: Any, local: int, input_specs: list[tf.TensorSpec]) -> Any:
    @tf.function(input_signature=input_specs, autograph=False)
    def head_signature(*inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {OUTPUTS_KEY: single_fn(*inputs, tf.constant(local, tf.int32))}

    return head_signature


def _branched_head_signature(serve: Callable, task_id: int, width: int, input_specs: list[tf.TensorSpec]) -> Any:
    @tf.function(input_signature=input_specs, autograph=False)
    def head_signature(*inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        rows = tf.shape(inputs[0])[0]
        return {OUTPUTS_KEY: serve(inputs, tf.fill([rows], tf.constant(task_id, tf.int32)))[OUTPUTS_KEY][:, :width]}

    return head_signature
