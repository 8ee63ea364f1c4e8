"""Per-row features in an assembly whose heads own branches: the trunk once, each branch on its rows.

A head with a branch computes ``head(branch(trunk_up_to_its_point(x)))``. The SavedModel
runs the backbone as consecutive trunk segments (:func:`modelhub.ml.branches.cut_backbone`):
after each branch point, the rows whose task branches there leave the trunk, go through
their branch (each distinct branch once, on its own rows, only when the batch has such
rows), and the rest go on. Rows of plain heads run the whole trunk. The result is one
feature row per input row, so the head stage after it is the same as without branches.

The cost of a call is the trunk (each segment on the rows still on it), plus each distinct
branch in the batch on its rows, plus the heads. Branches with the same architecture at the
same point are stacked (:class:`BranchGroup`): one variable per weight, each branch a slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from modelhub.ml.assembly.backbone_graph import backbone_resources, unless_empty
from modelhub.ml.branches import BranchError, Trunk, check_branch_fits
from modelhub.ml.errors import AssemblyError


@dataclass(frozen=True)
class AssemblyBranch:
    """The branch a head owns: the backbone's layers above ``after_layer``, with its own weights.

    Attributes:
        after_layer: the branch point (a backbone layer name).
        model: a Keras model from the trunk's tensor after ``after_layer`` to the features.
        sha256: the branch artifact's checksum; heads with the same one share the branch.
        layers: the backbone layers it owns.
    """

    after_layer: str
    model: Any
    sha256: str
    layers: list[str] = field(default_factory=list)

    @property
    def params(self) -> int:
        return int(self.model.count_params())


@dataclass
class BranchPlan:
    """Which trunk segment and which branch each task uses.

    Attributes:
        points: the branch points, in graph order.
        point_of_task: per task, the index of its branch point, or ``len(points)`` (plain).
        branch_of_task: per task, the index of its distinct branch, or -1 (plain).
        branches: the distinct branches (by sha256), in first-use order.
        branch_point: per distinct branch, the index of its point.
    """

    points: list[str]
    point_of_task: np.ndarray
    branch_of_task: np.ndarray
    branches: list[AssemblyBranch]
    branch_point: list[int]


def plan_branches(branches: Sequence[AssemblyBranch | None], trunk: Trunk) -> BranchPlan:
    """Number the distinct branches of the tasks (in task order) and place them on the trunk.

    Args:
        branches: per task, its branch or None (a plain head).
        trunk: the backbone cut at every branch point (with its top when some head is plain).
    """
    index_of = {name: position for position, name in enumerate(trunk.points)}
    distinct: dict[tuple[str, str], int] = {}
    found: list[AssemblyBranch] = []
    branch_of_task = np.full(len(branches), -1, np.int32)
    for task_id, branch in enumerate(branches):
        if branch is None:
            continue
        if branch.after_layer not in index_of:
            raise AssemblyError(
                f"Expected the trunk to be cut at '{branch.after_layer}' (task_id {task_id}'s branch point), "
                f"it is cut at {trunk.points}."
            )
        key = (branch.sha256, branch.after_layer)
        if key not in distinct:
            distinct[key] = len(found)
            found.append(branch)
        branch_of_task[task_id] = distinct[key]
    if np.any(branch_of_task < 0) and len(trunk.segments) == len(trunk.points):
        raise AssemblyError("Expected the trunk's top segment (some heads use the whole backbone), it was left out.")
    plain = len(trunk.points)
    point_of_task = np.array(
        [plain if index < 0 else index_of[found[index].after_layer] for index in branch_of_task.tolist()], np.int32
    )
    return BranchPlan(
        list(trunk.points), point_of_task, branch_of_task, found, [index_of[b.after_layer] for b in found]
    )


def check_branches(plan: BranchPlan, trunk: Trunk, feature_shape: Sequence[int | None], tasks: Sequence[str]) -> None:
    """Raise AssemblyError unless every branch maps its point's tensor to the features."""
    for index, branch in enumerate(plan.branches):
        owners = [tasks[t] for t in np.flatnonzero(plan.branch_of_task == index)]
        try:
            check_branch_fits(
                branch.model, trunk.shapes[plan.branch_point[index]], feature_shape, label=f"task '{owners[0]}'"
            )
        except BranchError as error:
            raise AssemblyError(str(error)) from error


@dataclass
class BranchGroup:
    """Distinct branches at one point with the same architecture, served as one stacked model.

    Each weight of the group is ONE variable holding every member's value along a new first
    axis, so a call captures the group's variables once, however many branches it has. A
    branch present in the batch runs as ``template.stateless_call`` with its slice of each
    stacked weight, on its own rows. (A ``tf.cond`` per branch captured every branch's
    variables: +6 ms a call at 50 MobileNetV2 branches, whether or not their rows came.)

    Attributes:
        position: the index of the branch point.
        members: the distinct branches' indices (into ``BranchPlan.branches``), in order.
        template: the first member's Keras model: the architecture every member shares.
    """

    position: int
    members: list[int]
    template: Any

    def stacked_values(self, models: Sequence[Any]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Return each trainable and non-trainable weight of the members, stacked on a new first axis."""
        chosen = [models[index] for index in self.members]

        def stack(attribute: str) -> list[np.ndarray]:
            columns = zip(*[getattr(model, attribute) for model in chosen], strict=True)
            return [np.stack([np.asarray(v.numpy()) for v in column]) for column in columns]

        return stack("trainable_variables"), stack("non_trainable_variables")


def group_branches(plan: BranchPlan) -> list[BranchGroup]:
    """Group the distinct branches by point and architecture (layer classes, configs, weight shapes).

    A branch holding a lookup table (its own vocabulary) is never grouped: a table is not a
    weight that can be stacked.
    """
    groups: dict[tuple[int, str], BranchGroup] = {}
    for index, branch in enumerate(plan.branches):
        position = plan.branch_point[index]
        key = (position, _architecture(branch.model) or f"alone-{index}")
        if key not in groups:
            groups[key] = BranchGroup(position, [], branch.model)
        groups[key].members.append(index)
    return list(groups.values())


def _architecture(model: Any) -> str | None:
    """A key equal for models that compute the same function of their weights; None if not stackable."""
    import json

    described = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.TextVectorization | keras.layers.StringLookup | keras.layers.IntegerLookup):
            return None
        described.append([type(layer).__name__, layer.get_config()])
    shapes = [
        [[list(v.shape), str(v.dtype)] for v in variables]
        for variables in (model.trainable_variables, model.non_trainable_variables)
    ]
    return json.dumps([described, shapes], sort_keys=True, default=str)


class BranchedFeatures:
    """Builds the per-row feature computation of a SavedModel; tracks its variables on ``module``."""

    def __init__(self, trunk: Trunk, plan: BranchPlan, module: tf.Module, feature_shape: Sequence[int]) -> None:
        self.trunk = trunk
        self.plan = plan
        self.feature_shape = [int(d) for d in feature_shape]
        # Keras models kept out of tf.Module tracking; their variables are tracked explicitly.
        self._segments = list(trunk.segments)
        module.trunk_variables = [v.value for segment in self._segments for v in segment.variables]
        models = [branch.model for branch in plan.branches]
        self.groups = group_branches(plan)
        self._stacked: list[tuple[list[tf.Variable], list[tf.Variable]]] = []
        # Row's distinct branch (+1, so that a plain row's -1 reads entry 0) -> its index in each group.
        self._local: list[tf.Tensor] = []
        for number, group in enumerate(self.groups):
            trainable, fixed = group.stacked_values(models)
            self._stacked.append(
                (
                    [
                        tf.Variable(value, trainable=False, name=f"branch_group{number}_w{i}")
                        for i, value in enumerate(trainable)
                    ],
                    [
                        tf.Variable(value, trainable=False, name=f"branch_group{number}_s{i}")
                        for i, value in enumerate(fixed)
                    ],
                )
            )
            local = np.full(len(plan.branches) + 1, -1, np.int32)
            local[np.asarray(group.members) + 1] = np.arange(len(group.members), dtype=np.int32)
            self._local.append(tf.constant(local))
        module.branch_variables = [v for trainable, fixed in self._stacked for v in (*trainable, *fixed)]
        self.groups_at = [
            [number for number, group in enumerate(self.groups) if group.position == position]
            for position in range(len(trunk.points))
        ]

    def resources(self) -> list[Any]:
        """Lookup tables (a text backbone's vocabulary) the first segment holds."""
        return backbone_resources(self._segments[0])

    def __call__(self, inputs: Any, task_id: tf.Tensor) -> tf.Tensor:
        """Return ``[rows, *feature_shape]`` float32 features, each row through its task's path."""
        num_rows = tf.shape(task_id)[0]
        point_of_row = tf.gather(tf.constant(self.plan.point_of_task), task_id)
        branch_of_row = tf.gather(tf.constant(self.plan.branch_of_task), task_id)
        hidden = self._run_segment(0, inputs, num_rows)
        rows = tf.range(num_rows)
        row_parts, feature_parts = [], []
        for position in range(len(self.trunk.points)):
            here = tf.gather(branch_of_row, rows) + 1
            for number in self.groups_at[position]:
                chosen, features = self._run_group(number, tf.gather(self._local[number], here), hidden)
                row_parts.append(tf.gather(rows, chosen))
                feature_parts.append(features)
            onward = tf.cast(tf.where(tf.gather(point_of_row, rows) > position)[:, 0], tf.int32)
            rows, hidden = tf.gather(rows, onward), tf.gather(hidden, onward)
            if position + 1 < len(self._segments):
                hidden = self._run_segment(position + 1, hidden, tf.shape(hidden)[0])
        if len(self._segments) > len(self.trunk.points):
            row_parts.append(rows)
            feature_parts.append(tf.cast(hidden, tf.float32))
        return tf.scatter_nd(
            tf.concat(row_parts, 0)[:, None],
            tf.concat(feature_parts, 0),
            tf.concat([[num_rows], tf.constant(self.feature_shape, tf.int32)], 0),
        )

    def _run_group(self, number: int, local: tf.Tensor, hidden: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Run each member of group ``number`` present in ``local`` (per row: member index or -1) on its rows.

        Returns the rows (indices into ``hidden``) and their features, member after member.
        """
        template = self.groups[number].template
        trainable, fixed = self._stacked[number]
        present, _ = tf.unique(tf.boolean_mask(local, local >= 0))
        count = tf.size(present)
        shape = tf.TensorShape([None, *self.feature_shape])
        found_rows = tf.TensorArray(tf.int32, size=count, infer_shape=False, element_shape=tf.TensorShape([None]))
        found = tf.TensorArray(tf.float32, size=count, infer_shape=False, element_shape=shape)

        def run_member(step, found_rows, found):
            member = present[step]
            chosen = tf.cast(tf.where(tf.equal(local, member))[:, 0], tf.int32)
            # v[member] slices the first axis without copying the weights.
            outputs, _ = template.stateless_call(
                [v[member] for v in trainable], [v[member] for v in fixed], tf.gather(hidden, chosen), training=False
            )
            return step + 1, found_rows.write(step, chosen), found.write(step, tf.cast(outputs, tf.float32))

        _, found_rows, found = tf.while_loop(lambda step, *_: step < count, run_member, [0, found_rows, found])
        return found_rows.concat(), tf.reshape(found.concat(), [-1, *self.feature_shape])

    def _run_segment(self, index: int, hidden: Any, num_rows: tf.Tensor) -> tf.Tensor:
        """Run segment ``index`` on ``hidden``, or give its empty output when there are no rows."""
        segment = self._segments[index]
        return unless_empty(lambda: segment(hidden, training=False), num_rows, segment.outputs[0])
