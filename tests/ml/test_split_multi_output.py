"""Family splits of full models with several outputs, and the branch import's choice of stored backbone.

A model with several outputs gives one head per output (dict outputs named by key, list outputs
by layer), each reproducing its output of the original model on its own. With branches, the stored
backbone is the version most files share bit for bit, whatever the order of the files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from modelhub.ml.errors import FamilySplitError
from modelhub.ml.keras_file.archive import KerasArchive
from modelhub.ml.probes import probe_inputs_for
from modelhub.ml.split.family import ModelSource, split_family
from modelhub.ml.split.single import output_names
from tests.ml.conftest import image_batch, make_backbone


def _multi_output(backbone: keras.Model, *, as_dict: bool = True, seed: int = 5) -> keras.Model:
    """The backbone nested, a Dense both outputs share, then a classifier and a regressor."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3), name="image")
    shared = keras.layers.Dense(5, activation="relu", name="shared")(backbone(inputs, training=False))
    cls = keras.layers.Dense(3, activation="softmax", name="cls_out")(shared)
    reg = keras.layers.Dense(1, name="reg_out")(shared)
    outputs = {"cls": cls, "reg": reg} if as_dict else [cls, reg]
    return keras.Model(inputs, outputs, name="alpha")


def _single(backbone: keras.Model, units: int, *, seed: int, name: str) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3), name="image")
    outputs = keras.layers.Dense(units, name="out")(backbone(inputs, training=False))
    return keras.Model(inputs, outputs, name=name)


def _save(models: dict[str, keras.Model], folder: Path) -> list[Path]:
    paths = []
    for name, model in models.items():
        paths.append(folder / f"{name}.keras")
        model.save(paths[-1])
    return paths


def _split(paths: list[Path], **kwargs):
    parts: dict[int, tuple] = {}
    name_heads = kwargs.pop("name_heads", None)
    sources = [
        ModelSource(
            label=p.name,
            fetch=lambda folder, p=p: Path(shutil.copy(p, folder / "model.keras")),
            head_name=p.stem,
            name_heads=name_heads,
        )
        for p in paths
    ]
    result = split_family(
        sources,
        on_head=lambda index, heads, branch: parts.__setitem__(index, (heads, branch)),
        check_file=lambda path: None,
        **{"feature_layer": None, **kwargs},
    )
    return result, parts


@pytest.mark.parametrize("as_dict", [True, False], ids=["dict-outputs", "list-outputs"])
def test_a_model_with_two_outputs_gives_one_head_per_output(tmp_path, as_dict):
    backbone = make_backbone()
    alpha = _multi_output(backbone, as_dict=as_dict)
    beta = _single(backbone, 4, seed=7, name="beta")
    paths = _save({"alpha": alpha, "beta": beta}, tmp_path)
    with KerasArchive(paths[0]) as opened:
        names = output_names(opened)
    expected_names = ["cls", "reg"] if as_dict else ["cls_out", "reg_out"]
    assert names == expected_names

    result, parts = _split(paths)
    assert result.feature_layer == "backbone/pool"
    heads, branch = parts[0]
    assert branch is None and [name for name, _ in heads] == expected_names
    assert [name for name, _ in parts[1][0]] == ["out"]
    assert result.reports[0]["outputs"] == expected_names
    # The Dense both outputs share after the feature layer is copied into each head.
    assert [entry["head_layers"] for entry in result.reports[0]["heads"]] == [
        ["shared", "cls_out"],
        ["shared", "reg_out"],
    ]
    assert set(result.verification["outputs"]) == set(expected_names)

    # Independently: each head on the stored backbone reproduces its output of the original model.
    x = image_batch(5, seed=9)
    original = alpha(x, training=False)
    original = dict(zip(expected_names, original, strict=True)) if not as_dict else original
    features = result.backbone(x, training=False)
    for (_name, head), key in zip(heads, ["cls", "reg"] if as_dict else expected_names, strict=True):
        np.testing.assert_allclose(np.asarray(head(features)), np.asarray(original[key]), atol=1e-6)
        assert head.inputs[0].name == "features" and len(head.outputs) == 1
    np.testing.assert_allclose(np.asarray(parts[1][0][0][1](features)), np.asarray(beta(x)), atol=1e-6)


def test_head_names_that_clash_fail_both_files(tmp_path):
    backbone = make_backbone()
    paths = _save({"alpha": _multi_output(backbone), "alpha-cls": _single(backbone, 2, seed=3, name="other")}, tmp_path)

    def name_heads(stem):
        return lambda outputs: [stem if len(outputs) == 1 else f"{stem}-{o}" for o in outputs]

    sources = [
        ModelSource(
            label=p.name,
            fetch=lambda folder, p=p: Path(shutil.copy(p, folder / "m.keras")),
            name_heads=name_heads(p.stem),
        )
        for p in paths
    ]
    with pytest.raises(FamilySplitError) as caught:
        split_family(sources, feature_layer=None, on_head=lambda *a: None, check_file=lambda p: None)
    assert set(caught.value.errors) == {0, 1}
    assert "'alpha-cls' is the task of 'alpha.keras' (output 'cls') and 'alpha-cls.keras'" in caught.value.errors[0]


# --------------------------------------------------------------------------- which backbone is stored


def _tuned(backbone: keras.Model, *, seed: int) -> keras.Model:
    """A copy of the backbone whose top conv moved a little (a fine-tune of the top layer)."""
    copy = keras.models.clone_model(backbone)
    copy.set_weights(backbone.get_weights())
    conv = copy.get_layer("conv2")
    rng = np.random.default_rng(seed)
    conv.set_weights([w + 0.05 * rng.standard_normal(w.shape).astype(w.dtype) for w in conv.get_weights()])
    return copy


@pytest.fixture(scope="module")
def tuned_family(tmp_path_factory):
    """aa and bb tuned their top conv (each its own way); cc and dd use the untouched base."""
    base = make_backbone()
    folder = tmp_path_factory.mktemp("tuned")
    models = {
        "aa": _single(_tuned(base, seed=1), 3, seed=11, name="aa"),
        "bb": _single(_tuned(base, seed=2), 4, seed=12, name="bb"),
        "cc": _single(base, 2, seed=13, name="cc"),
        "dd": _single(base, 5, seed=14, name="dd"),
    }
    return base, models, dict(zip(models, _save(models, folder), strict=True))


@pytest.mark.parametrize("order", [["aa", "bb", "cc", "dd"], ["dd", "bb", "aa", "cc"]])
def test_stored_backbone_is_the_one_most_files_share_in_any_order(tuned_family, order):
    base, models, paths = tuned_family
    result, parts = _split([paths[name] for name in order], branches=True, min_shared_fraction=0.2)
    first_untouched = next(name for name in order if name in ("cc", "dd"))
    assert result.reference["file"] == f"{first_untouched}.keras"
    assert result.reference["files_sharing"] == 2 and result.reference["num_files"] == 4
    assert "2 of 4 files share this backbone" in result.reference["reason"]
    assert "tie" not in result.reference["reason"]
    for stored, original in zip(result.backbone.get_weights(), base.get_weights(), strict=True):
        assert np.array_equal(stored, original)
    for position, name in enumerate(order):
        heads, branch = parts[position]
        assert (branch is None) == (name in ("cc", "dd")), name
        if branch is not None:
            assert branch[1].after_layer == "relu1"
        # Independently: every original model is reproduced from the stored backbone.
        x = probe_inputs_for(models[name], num_rows=4, seed=2)
        features = result.backbone(x)
        if branch is not None:
            trunk = keras.Model(result.backbone.inputs, result.backbone.get_layer("relu1").output)
            features = branch[0](trunk(x))
        got = np.asarray(heads[0][1](features))
        np.testing.assert_allclose(got, np.asarray(models[name](x)), atol=1e-5)


def test_a_tie_goes_to_the_earliest_file(tuned_family):
    _, _, paths = tuned_family
    result, parts = _split([paths["bb"], paths["cc"], paths["aa"]], branches=True, min_shared_fraction=0.2)
    assert result.reference["file"] == "bb.keras" and result.reference["files_sharing"] == 1
    assert "no two files share a backbone" in result.reference["reason"]
    assert parts[0][1] is None and parts[1][1] is not None and parts[2][1] is not None
