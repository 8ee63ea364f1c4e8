"""Split full models into backbone + head: nested, flattened, mismatches."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from modelhub.ml.errors import BackboneMismatchError, FeatureShapeMismatchError, HeadExtractionError
from modelhub.ml.inspect import copy_model
from modelhub.ml.split import backbone_from_models, check_head_compatible, extract_head
from tests.ml.conftest import make_backbone


def _nested_full_model(backbone: keras.Model, units: int = 3) -> keras.Model:
    inputs = keras.Input((8, 8, 3), name="image")
    features = backbone(inputs)
    x = keras.layers.Dense(5, activation="relu", name="hidden")(features)
    x = keras.layers.Dropout(0.5, name="drop")(x)
    return keras.Model(inputs, keras.layers.Dense(units, activation="softmax", name="probs")(x))


def _flattened_full_model(backbone: keras.Model) -> keras.Model:
    """Call the backbone's own layers directly (no nesting), then a 4-value box head."""
    inputs = keras.Input((8, 8, 3), name="image")
    x = inputs
    for layer in backbone.layers[1:]:
        x = layer(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="box")(x), name="boxes")


def _reference(model: keras.Model, images: np.ndarray) -> np.ndarray:
    return np.asarray(model(images, training=False))


def test_nested_head_matches_full_model(backbone, images):
    full = _nested_full_model(backbone)
    head = extract_head(full, backbone, name="topic")
    assert head.inputs[0].shape[1:] == (6,)
    assert head.layers[0].name == "features"
    assert [layer.name for layer in head.layers[1:]] == ["hidden", "drop", "probs"]
    # Standalone: its own weights.
    assert head.get_layer("probs").kernel is not full.get_layer("probs").kernel
    got = np.asarray(head(backbone(images, training=False), training=False))
    assert np.max(np.abs(got - _reference(full, images))) <= 1e-6


def test_flattened_regression_head(backbone, images):
    full = _flattened_full_model(backbone)
    # Reload both from files so they are distinct objects with identical weights.
    full = copy_model(full)
    head = extract_head(full, copy_model(backbone))
    assert head.outputs[0].shape[1:] == (4,)
    got = np.asarray(head(backbone(images, training=False)))
    np.testing.assert_allclose(got, _reference(full, images), atol=1e-6, rtol=0)


def test_perturbed_weight_fails_bit_identical_check(backbone):
    full = copy_model(_nested_full_model(backbone))
    layer = full.get_layer("backbone").get_layer("conv2")
    weights = layer.get_weights()
    weights[0][0, 0, 0, 0] += np.float32(1e-4)
    layer.set_weights(weights)
    with pytest.raises(BackboneMismatchError, match=r"'conv2'.*max abs diff 0\.0001"):
        extract_head(full, backbone)


def test_other_architecture_refused(backbone):
    other_inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(2, 1, name="only")(other_inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    other = keras.Model(other_inputs, keras.layers.Dense(2)(x))
    with pytest.raises(BackboneMismatchError, match="found neither|architecture"):
        extract_head(other, backbone)


def test_skip_connection_into_head_refused(backbone):
    inputs = keras.Input((8, 8, 3), name="image")
    features = backbone(inputs)
    skip = keras.layers.GlobalAveragePooling2D(name="skip")(inputs)
    merged = keras.layers.Concatenate()([features, skip])
    full = keras.Model(inputs, keras.layers.Dense(2)(merged))
    with pytest.raises(HeadExtractionError):
        extract_head(full, backbone)


def test_backbone_from_models(backbone, images):
    models = [_flattened_full_model(backbone), _flattened_full_model(backbone)]
    shared = backbone_from_models(models, "pool")
    np.testing.assert_array_equal(np.asarray(shared(images)), np.asarray(backbone(images)))
    drifted = copy_model(_flattened_full_model(backbone))
    layer = drifted.get_layer("bn1")
    weights = layer.get_weights()
    weights[2][1] += np.float32(0.5)  # moving mean
    layer.set_weights(weights)
    with pytest.raises(BackboneMismatchError, match=r"'bn1'.*model 2 .*0\.5"):
        backbone_from_models([*models, drifted], "pool")


def test_backbone_from_models_detects_other_backbone():
    first = _flattened_full_model(make_backbone(seed=0))
    second = _flattened_full_model(make_backbone(seed=9))
    with pytest.raises(BackboneMismatchError, match="model 1"):
        backbone_from_models([first, second], "pool")


def test_check_head_compatible(backbone):
    head = extract_head(_nested_full_model(backbone), backbone)
    check_head_compatible(head, [6])
    with pytest.raises(FeatureShapeMismatchError, match=r"\[6\].*'resnet' v3 outputs \[512\]"):
        check_head_compatible(head, [512], backbone_label="backbone 'resnet' v3")
