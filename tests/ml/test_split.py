"""Split full models into one backbone + heads: any nesting, text and several inputs, streaming."""

from __future__ import annotations

import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from modelhub.ml.errors import BackboneMismatchError, FamilySplitError, FeatureShapeMismatchError, HeadExtractionError
from modelhub.ml.inspect import check_head_compatible
from modelhub.ml.keras_file.align import align
from modelhub.ml.keras_file.archive import KerasArchive
from modelhub.ml.keras_file.graph import parse_config
from modelhub.ml.probes import probe_inputs_for
from modelhub.ml.safe_load import check_keras_archive
from modelhub.ml.split.family import ModelSource, split_family
from modelhub.ml.split.single import split_full_model
from modelhub.ml.untrusted import read_config
from tests.ml.conftest import make_backbone


def _nested(backbone: keras.Model, units: int, *, seed: int, hidden: int = 0, name: str = "nested") -> keras.Model:
    """The Keras transfer-learning guide's pattern: the backbone called as a sub-model."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3), name="image")
    x = backbone(inputs, training=False)
    if hidden:
        x = keras.layers.Dense(hidden, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(units, activation="softmax")(x), name=name)


def _flattened(backbone: keras.Model, units: int, *, seed: int, name: str = "flat") -> keras.Model:
    """The backbone's own layers called directly, then a head."""
    keras.utils.set_random_seed(seed)
    return keras.Model(backbone.input, keras.layers.Dense(units)(backbone.output), name=name)


def _save_all(models: list[keras.Model], folder: Path) -> list[Path]:
    paths = []
    for index, model in enumerate(models):
        path = folder / f"task{index}.keras"
        model.save(path)
        paths.append(path)
    return paths


def _sources(paths: list[Path]) -> list[ModelSource]:
    return [
        ModelSource(label=p.name, fetch=lambda folder, p=p: Path(shutil.copy(p, folder / "model.keras"))) for p in paths
    ]


def _split(paths: list[Path], feature_layer: str | None):
    heads: dict[int, keras.Model] = {}
    result = split_family(
        _sources(paths),
        feature_layer=feature_layer,
        on_head=lambda index, cut, branch: heads.__setitem__(index, cut[0][1]),
        check_file=check_keras_archive,
    )
    return result, [heads[i] for i in range(len(paths))]


def _assert_reproduces(models: list[keras.Model], result, heads: list[keras.Model]) -> None:
    """Every original full model == head(backbone(x)), computed independently by Keras."""
    inputs = probe_inputs_for(models[0], num_rows=5, seed=3)
    features = result.backbone(inputs, training=False)
    for model, head in zip(models, heads, strict=True):
        expected = np.asarray(model(inputs, training=False))
        np.testing.assert_allclose(np.asarray(head(features, training=False)), expected, atol=1e-6)


@pytest.fixture
def family(tmp_path):
    """Three models on one backbone: two nested (one MLP head), one flattened."""
    backbone = make_backbone()
    models = [
        _nested(backbone, 3, seed=1, name="topic"),
        _flattened(backbone, 4, seed=2, name="box"),
        _nested(backbone, 2, seed=3, hidden=5, name="intent"),
    ]
    return backbone, models, _save_all(models, tmp_path)


def test_mixed_nesting_with_named_layer_inside_the_nested_backbone(family):
    _, models, paths = family
    result, heads = _split(paths, "pool")
    assert result.feature_layer == "backbone/pool"
    assert [r["feature_layer"] for r in result.reports] == ["backbone/pool", "pool", "backbone/pool"]
    assert heads[0].input.name == "features" and tuple(heads[0].input.shape) == (None, 6)
    assert result.verification["max_abs_diff"] <= 1e-6
    _assert_reproduces(models, result, heads)


def test_nested_model_name_is_a_feature_layer(family):
    _, models, paths = family
    result, heads = _split(paths, "backbone")
    assert result.feature_layer == "backbone/pool"
    _assert_reproduces(models, result, heads)


def test_without_feature_layer_the_deepest_shared_layer_is_chosen_and_explained(family):
    _, models, paths = family
    result, heads = _split(paths, None)
    assert result.feature_layer == "backbone/pool"
    assert "Chosen automatically" in result.reason and "'backbone/pool'" in result.reason
    assert "all 3 models" in result.reason
    _assert_reproduces(models, result, heads)


def test_flattened_reference_matches_nested_candidates(family):
    _, models, paths = family
    result, heads = _split([paths[1], paths[0], paths[2]], None)
    assert result.feature_layer == "pool"
    _assert_reproduces([models[1], models[0], models[2]], result, heads)


def test_one_file_needs_a_feature_layer(family):
    _, _, paths = family
    with pytest.raises(FamilySplitError, match="single model"):
        _split(paths[:1], None)
    result, heads = _split(paths[:1], "pool")
    assert heads[0].count_params() == 6 * 3 + 3


def _perturbed(backbone: keras.Model, path: Path) -> Path:
    """A flattened full model whose backbone differs in exactly one weight element."""
    model = _flattened(backbone, 3, seed=9, name="drifted")
    model.save(path)
    clone = keras.saving.load_model(path)
    kernel = clone.get_layer("conv2").kernel
    values = kernel.numpy()
    values.flat[7] += np.float32(1e-3)
    kernel.assign(values)
    clone.save(path)
    return path


@pytest.mark.parametrize("feature_layer", ["pool", None])
def test_one_differing_weight_fails_the_whole_family_and_names_file_and_layer(family, tmp_path, feature_layer):
    backbone, _, paths = family
    bad = _perturbed(backbone, tmp_path / "drifted.keras")
    called = []
    with pytest.raises(FamilySplitError) as caught:
        split_family(
            _sources([*paths, bad]),
            feature_layer=feature_layer,
            on_head=lambda i, h, b: called.append(i),
            check_file=check_keras_archive,
        )
    assert list(caught.value.errors) == [3]
    message = caught.value.errors[3]
    assert "drifted.keras" in message and "conv2" in message and "max abs diff 0.001" in message
    assert called == []  # nothing is handed over when any file fails


def test_skip_connection_around_the_named_layer_is_refused(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,), name="x")
    hidden = keras.layers.Dense(4, name="hidden")(inputs)
    pooled = keras.layers.Dense(4, name="mid")(hidden)
    out = keras.layers.Dense(2, name="out")(keras.layers.Concatenate()([pooled, hidden]))
    path = _save_all([keras.Model(inputs, out)], tmp_path)
    with pytest.raises(FamilySplitError) as caught:
        _split(path, "mid")
    assert "skip connection" in caught.value.errors[0] and "hidden" in caught.value.errors[0]


def test_names_trainable_flags_and_initializer_seeds_do_not_matter(tmp_path):
    backbone = make_backbone()
    frozen = keras.models.clone_model(backbone)
    frozen.set_weights(backbone.get_weights())
    frozen.trainable = False  # the guide freezes the base before saving
    models = [_nested(backbone, 3, seed=1), _nested(frozen, 2, seed=2)]
    result, heads = _split(_save_all(models, tmp_path), None)
    assert result.feature_layer.endswith("pool")
    _assert_reproduces(models, result, heads)


def test_nested_sequential_and_shared_layers(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,), name="x")
    shared = keras.layers.Dense(5, activation="tanh", name="shared")
    block = keras.Sequential([keras.layers.Dense(6, activation="relu"), keras.layers.Dense(4)], name="block")
    features = block(shared(shared(inputs)))
    models = [keras.Model(inputs, keras.layers.Dense(units)(features), name=f"m{units}") for units in (2, 3)]
    result, heads = _split(_save_all(models, tmp_path), None)
    assert result.feature_layer.startswith("block/")
    _assert_reproduces(models, result, heads)


def test_text_backbone_with_text_vectorization_keeps_its_vocabulary(tmp_path):
    keras.utils.set_random_seed(0)
    vectorize = keras.layers.TextVectorization(max_tokens=40, output_sequence_length=5, name="vectorize")
    vectorize.adapt(["the cat runs fast", "a blue zebra under data", "model data cat"])
    text = keras.Input((1,), dtype="string", name="text")
    features = keras.layers.GlobalAveragePooling1D(name="pooled")(keras.layers.Embedding(40, 6)(vectorize(text)))
    models = [keras.Model(text, keras.layers.Dense(units)(features)) for units in (3, 2)]
    paths = _save_all(models, tmp_path)
    result, heads = _split(paths, None)
    assert result.feature_layer == "pooled"
    assert result.backbone.inputs[0].dtype == "string"
    words = np.array([["cat zebra"], ["blue model runs"], ["unknown words"]], dtype=object)
    features_out = result.backbone(words)
    for model, head in zip(models, heads, strict=True):
        np.testing.assert_allclose(np.asarray(head(features_out)), np.asarray(model(words)), atol=1e-6)
    # A different vocabulary is a different backbone.
    other = keras.layers.TextVectorization(max_tokens=40, output_sequence_length=5, name="vectorize")
    other.adapt(["completely other words here"])
    drifted = keras.Model(text, keras.layers.Dense(2)(models[0].layers[-2](models[0].layers[-3](other(text)))))
    drifted.save(tmp_path / "drifted.keras")
    with pytest.raises(FamilySplitError) as caught:
        _split([paths[0], tmp_path / "drifted.keras"], "pooled")
    assert "vocabulary" in caught.value.errors[1]


def test_two_named_inputs(tmp_path):
    keras.utils.set_random_seed(0)
    tokens = keras.Input((7,), dtype="int32", name="token_ids")
    numeric = keras.Input((3,), name="numeric")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(30, 4)(tokens))
    features = keras.layers.Dense(8, name="features")(
        keras.layers.Concatenate()([pooled, keras.layers.Dense(4)(numeric)])
    )
    models = [keras.Model({"token_ids": tokens, "numeric": numeric}, keras.layers.Dense(u)(features)) for u in (2, 5)]
    result, heads = _split(_save_all(models, tmp_path), None)
    assert result.feature_layer == "features"
    assert sorted(t.name for t in result.backbone.inputs) == ["numeric", "token_ids"]
    probe = probe_inputs_for(result.backbone, num_rows=6)
    assert set(probe) == {"token_ids", "numeric"} and probe["token_ids"].max() < 30
    _assert_reproduces(models, result, heads)


def test_split_full_model_against_a_stored_backbone(tmp_path):
    backbone = make_backbone()
    backbone.save(tmp_path / "backbone.keras")
    full = _nested(backbone, 3, seed=4)
    full.save(tmp_path / "full.keras")
    head = split_full_model(tmp_path / "backbone.keras", tmp_path / "full.keras", name="topic")
    images = probe_inputs_for(full, num_rows=3)
    np.testing.assert_allclose(np.asarray(head(backbone(images))), np.asarray(full(images)), atol=1e-6)
    other = make_backbone(seed=5)
    _nested(other, 3, seed=4).save(tmp_path / "other.keras")
    with pytest.raises(BackboneMismatchError, match="conv1"):
        split_full_model(tmp_path / "backbone.keras", tmp_path / "other.keras")


def test_head_reading_the_input_is_refused(tmp_path):
    backbone = make_backbone()
    backbone.save(tmp_path / "backbone.keras")
    flat_image = keras.layers.Flatten()(backbone.input)
    mixed = keras.layers.Concatenate()([backbone.output, keras.layers.Dense(2)(flat_image)])
    keras.Model(backbone.input, keras.layers.Dense(3)(mixed)).save(tmp_path / "leaky.keras")
    with pytest.raises(HeadExtractionError, match="input"):
        split_full_model(tmp_path / "backbone.keras", tmp_path / "leaky.keras")


def test_flat_graph_is_the_same_for_nested_and_flattened_files(family):
    _, _, paths = family
    nested, flat = (parse_config(read_config(p)) for p in paths[:2])
    assert [n.class_name for n in nested.nodes][:6] == [n.class_name for n in flat.nodes][:6]
    with KerasArchive(paths[0]) as a, KerasArchive(paths[1]) as b:
        a.check_layout()
        alignment = align(a, b)
    assert len(alignment.identical) == len(nested.nodes) - 1  # all but the head's Dense


def test_check_head_compatible():
    head = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
    check_head_compatible(head, [6])
    with pytest.raises(FeatureShapeMismatchError, match="expects features of shape"):
        check_head_compatible(head, [7], backbone_label="'bb' v1")
