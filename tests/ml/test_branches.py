"""Trunk and branches: cutting a keras.applications backbone, and importing models fine-tuned in its top.

The models are MobileNetV2 bases fine-tuned in their top k inverted-residual blocks
(tests/branched_models.py); every numerical check compares with the original full model
computed by Keras, independently of the cut.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from modelhub.ml.branches import (
    BranchError,
    cut_backbone,
    cut_points,
    describe_points,
    extract_branch,
    point_below,
    trunk_until,
)
from modelhub.ml.errors import FamilySplitError
from modelhub.ml.keras_file.archive import KerasArchive
from modelhub.ml.split.family import ModelSource, split_family
from tests.branched_models import BRANCH_POINTS, build_branched_family, top_layer_names

TOPS = [0, 0, 1, 2, 4]


def _scaled_diff(expected: np.ndarray, got: np.ndarray) -> float:
    expected = np.asarray(expected, np.float64)
    return float(np.max(np.abs(expected - np.asarray(got, np.float64)))) / max(1.0, float(np.max(np.abs(expected))))


def _nbytes(model) -> int:
    """Bytes of a model's weights (variables and BatchNormalization statistics), as stored."""
    return sum(int(np.asarray(weight).nbytes) for weight in model.get_weights())


@pytest.fixture(scope="module")
def family():
    return build_branched_family(TOPS)


@pytest.fixture(scope="module")
def family_files(family, tmp_path_factory):
    return family.save(tmp_path_factory.mktemp("branched"))


@pytest.fixture(scope="module")
def base_file(family, tmp_path_factory):
    path = tmp_path_factory.mktemp("base") / "base.keras"
    family.base.save(path)
    return path


def _sources(paths: list[Path]) -> list[ModelSource]:
    return [
        ModelSource(
            label=p.name, fetch=lambda folder, p=p: Path(shutil.copy(p, folder / "model.keras")), head_name=p.stem
        )
        for p in paths
    ]


def _split(paths, **kwargs):
    parts: dict[int, tuple] = {}
    result = split_family(
        _sources(paths),
        on_head=lambda index, cut, branch: parts.__setitem__(index, (cut[0][1], branch)),
        check_file=lambda path: None,
        **{"feature_layer": None, **kwargs},
    )
    return result, parts


# --------------------------------------------------------------------------- cutting a backbone


def test_branch_points_of_mobilenet_skip_the_inside_of_residual_blocks(base_file):
    with KerasArchive(base_file) as opened:
        names = [opened.graph.nodes[ref[0]].path for ref in cut_points(opened.graph)]
    assert "block_14_add" in names and "block_12_add" in names
    # block_15's skip connection reads block_14_add: nothing inside block 15 can be a branch point.
    assert not [name for name in names if name.startswith("block_15_") and name != "block_15_add"]
    rows = describe_points(base_file)
    above = {row["layer"]: row["params_above"] for row in rows}
    branch, info = extract_branch(base_file, "block_14_add")
    assert above["block_14_add"] == info.params == branch.count_params()
    assert info.layers[0] == "block_15_expand" and info.layers[-1] == "global_average_pooling2d"


def test_cut_backbone_segments_compute_the_backbone(family, base_file):
    trunk = cut_backbone(base_file, ["block_14_add", "block_12_add", "block_14_add"])
    assert trunk.points == ["block_12_add", "block_14_add"]
    assert len(trunk.segments) == 3
    x = family.sample_inputs(4, seed=3)
    hidden = x
    for segment in trunk.segments:
        hidden = segment(hidden, training=False)
    expected = family.base(x, training=False)
    assert _scaled_diff(expected, hidden) <= 1e-6
    # Without the top, the last segment stops at the last point.
    short = cut_backbone(base_file, ["block_12_add"], include_top=False)
    assert len(short.segments) == 1
    assert list(short.segments[0].outputs[0].shape[1:]) == short.shapes[0]
    until = trunk_until(family.base, "block_12_add")
    assert _scaled_diff(until(x), short.segments[0](x)) == 0.0


def test_a_layer_inside_a_residual_block_is_refused_with_the_points_near_it(base_file):
    with pytest.raises(BranchError, match="skip connection") as error:
        cut_backbone(base_file, ["block_15_project"])
    assert "Branch points near the top" in str(error.value)
    with pytest.raises(BranchError, match="Expected branch point 'no_such_layer'"):
        cut_backbone(base_file, ["no_such_layer"])


def test_point_below_the_layers_a_fine_tune_trains(family, base_file):
    for k, point in BRANCH_POINTS.items():
        assert point_below(base_file, top_layer_names(family.base, k)) == point
    # Training only Conv_1's BatchNorm branches right after Conv_1.
    assert point_below(base_file, ["Conv_1_bn"]) == "Conv_1"


# --------------------------------------------------------------------------- importing with branches


def test_branch_import_gives_each_model_its_branch_and_reproduces_it(family, family_files):
    result, parts = _split(family_files, branches=True, min_shared_fraction=0.2)
    assert result.feature_layer.endswith("global_average_pooling2d")
    assert result.trunk["after_layer"] == BRANCH_POINTS[max(TOPS)]
    assert 0.2 <= result.trunk["fraction"] < 0.5
    x = family.sample_inputs(6, seed=11)
    for index, k in enumerate(TOPS):
        head, branch = parts[index]
        report = result.reports[index]
        if k == 0:
            assert branch is None and report["branch"] is None
            assert report["owned_bytes"] == _nbytes(head) and report["shared_bytes"] == _nbytes(result.backbone)
            got = head(result.backbone(x, training=False))
        else:
            model, info = branch
            assert info.after_layer == BRANCH_POINTS[k]
            assert report["branch"] == info.as_dict()
            assert set(top_layer_names(family.base, k)) <= set(info.layers)
            assert info.params == model.count_params()
            trunk = trunk_until(result.backbone, info.after_layer)
            # A branched model owns its head and its branch; it shares the trunk up to the branch point.
            assert report["owned_bytes"] == _nbytes(head) + _nbytes(model) > _nbytes(head)
            assert report["shared_bytes"] == _nbytes(trunk) > 0
            got = head(model(trunk(x), training=False))
        assert _scaled_diff(family.predict(index, x), got) <= 1e-5, f"model {index} (top {k} blocks)"
    # The branch never contains the trunk: its input is the tensor after the branch point.
    model, info = parts[4][1]
    assert "block_12_add" not in [layer.name for layer in model.layers]
    assert result.reports[4]["shared_bytes"] < result.reports[2]["shared_bytes"]
    assert result.verification["branched_max_rel_diff"] <= 1e-5


def test_branch_import_refuses_a_small_trunk_with_the_numbers(family_files):
    with pytest.raises(FamilySplitError) as error:
        _split(family_files, branches=True)
    errors = error.value.errors
    assert sorted(errors) == [2, 3, 4]  # each of the fine-tuned models shares < 50% of the parameters
    assert "at least 50%" in errors[4] and "block_12_add" in errors[4] and "min_shared_fraction" in errors[4]
    shared = float(errors[4].split("it shares ")[1].split("%")[0])
    assert 0 < shared < 50


def test_strict_import_fails_and_names_every_fine_tuned_file(family_files):
    with pytest.raises(FamilySplitError) as error:
        _split(family_files)
    assert sorted(error.value.errors) == [2, 3, 4]
    assert "branches" in error.value.errors[2]


def test_named_feature_layer_with_flattened_models(tmp_path):
    flat = build_branched_family([0, 2, 1], nested=False)
    paths = flat.save(tmp_path)
    result, parts = _split(paths, branches=True, min_shared_fraction=0.2, feature_layer="global_average_pooling2d")
    assert [parts[i][1] is None for i in range(3)] == [True, False, False]
    assert parts[1][1][1].after_layer == "block_14_add"
    x = flat.sample_inputs(3, seed=5)
    head, (model, info) = parts[2]
    got = head(model(trunk_until(result.backbone, info.after_layer)(x)))
    assert _scaled_diff(flat.predict(2, x), got) <= 1e-5


def test_without_plain_heads_the_nested_backbone_or_a_named_layer_says_where_heads_start(tmp_path):
    nested = build_branched_family([1, 2])
    result, parts = _split(nested.save(tmp_path / "nested"), branches=True, min_shared_fraction=0.2)
    assert "nested model" in result.reason
    # The first model's backbone is the one stored: it gets a plain head, the other branches below it.
    assert parts[0][1] is None and parts[1][1][1].after_layer == "block_14_add"
    flat = build_branched_family([1, 2], nested=False)
    with pytest.raises(FamilySplitError) as error:
        _split(flat.save(tmp_path / "flat"), branches=True, min_shared_fraction=0.2)
    assert "Pass feature_layer" in str(error.value.errors)
