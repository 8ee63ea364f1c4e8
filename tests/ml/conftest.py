"""Tiny Keras models shared by the modelhub.ml tests (no database, no Django)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


def make_backbone(name: str = "backbone", *, seed: int = 0) -> keras.Model:
    """Return a tiny conv backbone: 8x8x3 image -> 6 features (with BatchNorm)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, x, name=name)
    # Non-trivial BatchNorm statistics so inference mode matters.
    bn = model.get_layer("bn1")
    gamma, beta, mean, var = bn.get_weights()
    bn.set_weights([gamma * 1.5, beta + 0.1, mean + 0.2, var * 2.0])
    return model


def make_dense_head(units: int, *, activation: str = "softmax", num_features: int = 6, seed: int = 1) -> keras.Model:
    """Return a Dense head on ``num_features`` features."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((num_features,), name="features")
    outputs = keras.layers.Dense(units, activation=activation, name="out")(inputs)
    return keras.Model(inputs, outputs, name=f"dense{units}")


def make_mlp_head(units: int, *, hidden: int = 5, num_features: int = 6, seed: int = 2) -> keras.Model:
    """Return an MLP head: Dense(relu) -> Dropout -> Dense."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((num_features,), name="features")
    x = keras.layers.Dense(hidden, activation="relu", name="hidden")(inputs)
    x = keras.layers.Dropout(0.3, name="drop")(x)
    outputs = keras.layers.Dense(units, name="out")(x)
    return keras.Model(inputs, outputs, name="mlp")


def make_branchy_head(num_features: int = 6, seed: int = 3) -> keras.Model:
    """Return a non-chain head (two branches added), which cannot be stacked."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((num_features,), name="features")
    left = keras.layers.Dense(3, name="left")(inputs)
    right = keras.layers.Dense(3, activation="tanh", name="right")(inputs)
    return keras.Model(inputs, keras.layers.Add(name="sum")([left, right]), name="branchy")


def image_batch(num_rows: int = 4, seed: int = 0) -> np.ndarray:
    """Return random 8x8x3 float32 images."""
    return np.random.default_rng(seed).standard_normal((num_rows, 8, 8, 3)).astype("float32")


@pytest.fixture
def backbone() -> keras.Model:
    return make_backbone()


@pytest.fixture
def images() -> np.ndarray:
    return image_batch()
