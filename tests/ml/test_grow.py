"""Function-preserving growth: identity inserts, residual blocks, widening, refusals."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from modelhub.ml.errors import GrowthError, GrowthNotPreservedError
from modelhub.ml.grow import grow_model, provably_non_negative
from tests.ml.conftest import image_batch, make_backbone


def _mlp() -> keras.Model:
    keras.utils.set_random_seed(4)
    inputs = keras.Input((5,), name="x")
    x = keras.layers.Dense(6, name="d1")(inputs)  # linear: may be negative
    x = keras.layers.Dense(4, activation="relu", name="d2")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Dropout(0.1, name="drop")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(x), name="mlp")


def _vectors(num_rows: int = 6) -> np.ndarray:
    return np.random.default_rng(3).standard_normal((num_rows, 5)).astype("float32")


def _assert_same_function(original, grown, inputs):
    np.testing.assert_allclose(np.asarray(grown(inputs)), np.asarray(original(inputs)), rtol=0, atol=1e-6)


def test_dense_identity_linear_and_relu():
    model = _mlp()
    linear = grow_model(model, kind="dense_identity", after="d1", probe_inputs=_vectors())
    layer = linear["model"].get_layer("d1_dense_identity")
    assert keras.activations.serialize(layer.activation) == "linear"  # d1 can be negative
    _assert_same_function(model, linear["model"], _vectors(9))
    relu = grow_model(model, kind="dense_identity", after="d2")
    assert keras.activations.serialize(relu["model"].get_layer("d2_dense_identity").activation) == "relu"
    _assert_same_function(model, relu["model"], _vectors(9))
    assert relu["verification"]["max_abs_diff"] <= 1e-6


def test_relu_on_possibly_negative_input_is_refused():
    """Forcing a ReLU identity after a linear layer changes the function: the check catches it."""
    model = _mlp()
    grown = grow_model(model, kind="dense_identity", after="d1")["model"]
    layer = grown.get_layer("d1_dense_identity")
    layer.activation = keras.activations.relu
    from modelhub.ml.grow import compare_outputs

    assert compare_outputs(model, grown, _vectors())["relative_diff"] > 1e-5


def test_non_negative_detection():
    model = make_backbone()
    assert provably_non_negative(model, "relu1")
    assert provably_non_negative(model, "pool")  # average of ReLU outputs
    assert not provably_non_negative(model, "bn1")


def test_conv_identity_and_even_kernel_refused(backbone):
    images = image_batch(3)
    grown = grow_model(backbone, kind="conv_identity", after="relu1", kernel_size=3)
    _assert_same_function(backbone, grown["model"], images)
    assert grown["new_layers"] == ["relu1_conv_identity"]
    five = grow_model(backbone, kind="conv_identity", after="bn1", kernel_size=5)
    assert keras.activations.serialize(five["model"].get_layer("bn1_conv_identity").activation) == "linear"
    _assert_same_function(backbone, five["model"], images)
    with pytest.raises(GrowthError, match="odd kernel_size"):
        grow_model(backbone, kind="conv_identity", after="relu1", kernel_size=2)
    with pytest.raises(GrowthError, match="conv_identity"):
        grow_model(backbone, kind="dense_identity", after="relu1")


def test_residual_blocks(backbone):
    images = image_batch(3)
    conv = grow_model(backbone, kind="residual", after="conv2")
    _assert_same_function(backbone, conv["model"], images)
    last = conv["model"].get_layer("conv2_residual_2")
    assert not np.any(last.get_weights()[0])
    dense = grow_model(_mlp(), kind="residual", after="d1", hidden_units=7)
    _assert_same_function(_mlp(), dense["model"], _vectors())


def test_widen_dense_with_batchnorm():
    model = _mlp()
    bn = model.get_layer("bn")
    bn.set_weights([w + np.float32(0.3) for w in bn.get_weights()])
    grown = grow_model(model, kind="widen", layer="d2", units=7)
    new = grown["model"]
    assert new.get_layer("d2").units == 7
    assert new.get_layer("bn").get_weights()[2].shape == (7,)
    np.testing.assert_array_equal(new.get_layer("bn").get_weights()[2][4:], bn.get_weights()[2][:3])
    _assert_same_function(model, new, _vectors(9))
    assert set(grown["changed_layers"]) == {"d2", "bn", "drop", "out"}


def test_widen_conv(backbone):
    grown = grow_model(backbone, kind="widen", layer="conv1", units=9)
    assert grown["model"].get_layer("conv1").filters == 9
    _assert_same_function(backbone, grown["model"], image_batch(3))


def test_widen_refusals(backbone):
    with pytest.raises(GrowthError, match="units > 4"):
        grow_model(backbone, kind="widen", layer="conv1", units=4)
    with pytest.raises(GrowthError, match="Dense or Conv2D"):
        grow_model(backbone, kind="widen", layer="bn1", units=8)
    # conv2 feeds the pooling and then nothing weight-bearing: no consumer to rescale.
    with pytest.raises(GrowthError, match="exactly one layer"):
        grow_model(backbone, kind="widen", layer="conv2", units=8)


def test_train_options(backbone):
    new_only = grow_model(backbone, kind="conv_identity", after="relu1", train="new")["model"]
    trainable = {layer.name for layer in new_only.layers if layer.trainable and layer.weights}
    assert trainable == {"relu1_conv_identity"}
    everything = grow_model(backbone, kind="conv_identity", after="relu1", train="all")["model"]
    assert all(layer.trainable for layer in everything.layers)


def test_nested_sequential_refused_and_top_level_sequential_grown():
    inner = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, name="inner_dense")], name="inner")
    inputs = keras.Input((5,), name="x")
    outer = keras.Model(inputs, keras.layers.Dense(2, name="top")(inner(inputs)))
    with pytest.raises(GrowthError, match="nested Sequential 'inner'"):
        grow_model(outer, kind="dense_identity", after="inner_dense")
    sequential = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(4, name="s1"), keras.layers.Dense(2, name="s2")]
    )
    grown = grow_model(sequential, kind="dense_identity", after="s1")
    _assert_same_function(sequential, grown["model"], _vectors())


def test_growth_over_tolerance_refused(monkeypatch):
    """A growth whose verification exceeds the tolerance is refused with its numbers."""
    import modelhub.ml.grow as grow_module

    real = grow_module._block_factory

    def broken_factory(*args, **kwargs):
        block = real(*args, **kwargs)

        def perturbed(x):
            y, layers = block(x)
            kernel, bias = layers[0].get_weights()
            layers[0].set_weights([kernel * np.float32(1.01), bias])
            return y, layers

        return perturbed

    monkeypatch.setattr(grow_module, "_block_factory", broken_factory)
    with pytest.raises(GrowthNotPreservedError, match=r"relative 1e-05, got max abs diff .*relative"):
        grow_model(_mlp(), kind="dense_identity", after="d1")
