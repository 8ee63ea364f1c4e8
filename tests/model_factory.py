"""Tiny Keras models for tests: one shared backbone, heads of several kinds, full models.

Imports Keras lazily so that importing this module does not load TensorFlow.
"""

from pathlib import Path

INPUT_SHAPE = (8,)
FEATURE_LAYER = "features"
FEATURE_WIDTH = 6


def make_backbone(seed: int = 0):
    """A small MLP backbone: input (8,) -> features (6,), named layers, deterministic weights."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=INPUT_SHAPE, name="inputs")
    x = keras.layers.Dense(12, activation="relu", name="hidden")(inputs)
    x = keras.layers.Dense(FEATURE_WIDTH, activation="relu", name=FEATURE_LAYER)(x)
    return keras.Model(inputs, x, name="backbone")


def make_head(kind: str = "dense", units: int = 3, seed: int = 1, name: str = "head"):
    """A head on the backbone's features: 'dense' (softmax), 'mlp', or 'regression' (linear)."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(FEATURE_WIDTH,), name="features_in")
    if kind == "mlp":
        x = keras.layers.Dense(5, activation="relu", name=f"{name}_hidden")(inputs)
        outputs = keras.layers.Dense(units, activation="softmax", name=f"{name}_out")(x)
    elif kind == "regression":
        outputs = keras.layers.Dense(units, activation=None, name=f"{name}_out")(inputs)
    else:
        outputs = keras.layers.Dense(units, activation="softmax", name=f"{name}_out")(inputs)
    return keras.Model(inputs, outputs, name=name)


def make_full_model(backbone, kind: str = "dense", units: int = 3, seed: int = 1, name: str = "task"):
    """Backbone layers called directly (flattened) followed by a fresh head, as users build them."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=INPUT_SHAPE, name="inputs")
    x = inputs
    for layer in backbone.layers[1:]:
        x = layer(x)
    head = make_head(kind, units=units, seed=seed, name=f"{name}_head")
    outputs = x
    for layer in head.layers[1:]:
        outputs = layer(outputs)
    return keras.Model(inputs, outputs, name=name)


def save(model, path: Path) -> Path:
    path = Path(path)
    model.save(path)
    return path


def make_classification_npz(
    path: Path, *, num_rows: int = 240, num_classes: int = 3, rule_seed: int = 0, x_seed: int = 0, labels=True
) -> Path:
    """Write a learnable dataset for the tiny backbone: y = argmax(x @ W) for a seeded W."""
    import numpy as np

    x = np.random.default_rng(x_seed).standard_normal((num_rows, INPUT_SHAPE[0])).astype("float32")
    weights = np.random.default_rng(100 + rule_seed).standard_normal((INPUT_SHAPE[0], num_classes))
    y = (x @ weights).argmax(axis=1).astype("int64")
    split = num_rows * 3 // 4
    arrays = {"x": x[:split], "y": y[:split], "x_val": x[split:], "y_val": y[split:]}
    if labels:
        arrays["labels"] = np.array([f"class_{i}" for i in range(num_classes)])
    np.savez(path, **arrays)
    return Path(path)
