"""Serving an assembly whose heads own branches: trunk once, stacked branches, each row its own path.

The full models are MobileNetV2 bases fine-tuned in their top k blocks (tests/branched_models.py).
Several models fine-tuned the same blocks, so their branches share one architecture and are
served stacked (one variable per weight). Every check compares the SavedModel, loaded by
TensorFlow alone, with the ORIGINAL full Keras model on the same rows.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import tensorflow as tf

from modelhub.ml.assembly.build import build_assembly
from modelhub.ml.assembly.manifest import AssemblyHead
from modelhub.ml.assembly.trunk import AssemblyBranch, group_branches, plan_branches
from modelhub.ml.branches import cut_backbone, extract_branch
from tests.branched_models import BRANCH_POINTS, build_branched_family

# Two plain heads, three models fine-tuned in the top block, two in the top 2, one in the top 4.
TOPS = [0, 1, 1, 2, 0, 1, 2, 4]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    import keras

    folder = tmp_path_factory.mktemp("trunk_serving")
    family = build_branched_family(TOPS)
    base_path = folder / "base.keras"
    family.base.save(base_path)
    heads = []
    for index, (model, k) in enumerate(zip(family.models, TOPS, strict=True)):
        path = folder / f"{family.tasks[index]}.keras"
        model.save(path)
        head_layer = model.layers[-1]
        features = keras.Input(head_layer.input.shape[1:], name="features")
        head = keras.Model(features, head_layer(features), name=f"head{index}")
        branch = None
        if k:
            tuned = folder / f"tuned{index}.keras"
            model.layers[1].save(tuned)  # the nested, fine-tuned base
            branch_model, info = extract_branch(tuned, BRANCH_POINTS[k], name=f"branch{index}")
            digest = hashlib.sha256(f"branch-{index}".encode()).hexdigest()
            branch = AssemblyBranch(info.after_layer, branch_model, digest, info.layers)
        heads.append(AssemblyHead(task=family.tasks[index], model=head, version=1, sha256="0" * 64, branch=branch))
    trunk = cut_backbone(base_path, {h.branch.after_layer for h in heads if h.branch}, include_top=True)
    result = build_assembly(
        backbone=family.base,
        heads=heads,
        export_dir=folder / "assembly",
        backbone_info={"name": "mobilenet", "version": 1, "sha256": "0" * 64},
        trunk=trunk,
        per_head_signatures=True,
    )
    loaded = tf.saved_model.load(str(folder / "assembly"))
    return family, heads, trunk, result, loaded


def _serve(loaded, family, task_ids: np.ndarray, seed: int):
    inputs = family.sample_inputs(len(task_ids), seed=seed)
    outputs = loaded.signatures["serving_default"](inputs=tf.constant(inputs), task_id=tf.constant(task_ids))
    return inputs, outputs["outputs"].numpy()


def _assert_matches_full_models(family, task_ids, inputs, outputs):
    for task_id in np.unique(task_ids):
        rows = np.flatnonzero(task_ids == task_id)
        expected = family.predict(int(task_id), inputs)[rows]
        width = family.widths[task_id]
        scale = max(1.0, float(np.max(np.abs(expected))))
        assert float(np.max(np.abs(outputs[rows, :width] - expected))) <= 1e-5 * scale, f"task {task_id}"
        assert np.all(outputs[rows, width:] == 0)


def test_branches_with_one_architecture_at_one_point_are_stacked(served):
    family, heads, trunk, result, loaded = served
    plan = plan_branches([h.branch for h in heads], trunk)
    groups = group_branches(plan)
    # 6 distinct branches, 3 architectures (top 1, 2, 4 blocks): 3 groups.
    assert len(plan.branches) == 6
    assert sorted(len(g.members) for g in groups) == [1, 2, 3]
    assert {trunk.points[g.position] for g in groups} == {BRANCH_POINTS[1], BRANCH_POINTS[2], BRANCH_POINTS[4]}
    # The SavedModel holds one variable per weight of each group, not one per branch.
    expected = sum(len(g.template.variables) for g in groups)
    assert len(loaded.branch_variables) == expected
    assert sum(int(np.prod(v.shape)) for v in loaded.branch_variables) == sum(b.params for b in plan.branches)
    assert result["verification"]["max_rel_diff"] <= 1e-5


@pytest.mark.parametrize(
    "task_ids",
    [
        pytest.param([1] * 6, id="one-branched-task"),
        pytest.param([5] * 6, id="another-member-of-the-same-group"),
        pytest.param([0] * 5, id="plain-rows-only"),
        pytest.param([7, 0, 2, 5, 3, 1, 6, 4, 2, 7, 1, 0], id="every-task-mixed"),
        pytest.param([3], id="one-row"),
    ],
)
def test_every_row_gets_its_own_full_models_output(served, task_ids):
    family, _, _, _, loaded = served
    task_ids = np.asarray(task_ids, np.int32)
    inputs, outputs = _serve(loaded, family, task_ids, seed=len(task_ids))
    _assert_matches_full_models(family, task_ids, inputs, outputs)


def test_an_empty_batch_gives_no_rows(served):
    family, _, _, _, loaded = served
    _, outputs = _serve(loaded, family, np.zeros(0, np.int32), seed=0)
    assert outputs.shape == (0, max(family.widths))


@pytest.mark.parametrize("task_id", [0, 2, 7])
def test_a_tasks_own_signature_serves_its_full_model(served, task_id):
    family, _, _, _, loaded = served
    inputs = family.sample_inputs(4, seed=40 + task_id)
    got = loaded.signatures[family.tasks[task_id]](inputs=tf.constant(inputs))["outputs"].numpy()
    expected = family.predict(task_id, inputs)
    assert got.shape == expected.shape
    assert float(np.max(np.abs(got - expected))) <= 1e-5 * max(1.0, float(np.max(np.abs(expected))))
