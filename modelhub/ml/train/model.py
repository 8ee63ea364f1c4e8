"""The Keras pieces every kind of training shares: a new head, the full model, losses, metrics, checks.

:mod:`.heads` trains heads, :mod:`.backbone` fine-tunes and trains backbones, :mod:`.evaluate`
scores heads; each builds on what is here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from modelhub.ml.callbacks import CancelCheck, ProgressAndCancel, ProgressCallback
from modelhub.ml.errors import InvalidDatasetError, MLError
from modelhub.ml.features import Inputs, num_rows
from modelhub.ml.inspect import input_name

HEAD_KINDS = ("dense", "mlp")
HEAD_ACTIVATIONS = ("linear", "softmax", "sigmoid")


def build_head(
    feature_shape: Sequence[int],
    *,
    units: int,
    kind: str = "dense",
    activation: str = "softmax",
    hidden_units: Sequence[int] = (),
    dropout: float = 0.0,
    name: str = "head",
    seed: int | None = None,
) -> keras.Model:
    """Build a head whose single input (named ``"features"``) has ``feature_shape``.

    Args:
        feature_shape: the backbone's feature shape without batch; >1-D features are flattened.
        units: output width.
        kind: ``"dense"`` (one Dense layer) or ``"mlp"`` (hidden Dense+ReLU layers, dropout).
        activation: ``"linear"`` (regression), ``"softmax"`` or ``"sigmoid"``.
        hidden_units: hidden layer sizes for ``"mlp"``.
        dropout: dropout rate after each hidden layer.
        name: model name.
        seed: seeds the initialisers.

    Returns:
        An uncompiled ``keras.Model``.

    Example:
        >>> build_head([1280], units=10, kind="mlp", hidden_units=[64], dropout=0.2)
    """
    if kind not in HEAD_KINDS:
        raise MLError(f"Expected head kind in {HEAD_KINDS}, received '{kind}'.")
    if activation not in HEAD_ACTIVATIONS:
        raise MLError(f"Expected activation in {HEAD_ACTIVATIONS}, received '{activation}'.")
    if kind == "mlp" and not hidden_units:
        raise MLError("Expected hidden_units (e.g. [64]) for an 'mlp' head, received none.")
    if seed is not None:
        keras.utils.set_random_seed(seed)
    inputs = keras.Input(tuple(feature_shape), name="features")
    x = keras.layers.Flatten(name="flatten")(inputs) if len(feature_shape) > 1 else inputs
    if kind == "mlp":
        for index, width in enumerate(hidden_units):
            x = keras.layers.Dense(int(width), activation="relu", name=f"hidden_{index}")(x)
            if dropout:
                x = keras.layers.Dropout(dropout, name=f"dropout_{index}")(x)
    outputs = keras.layers.Dense(units, activation=activation, name="output")(x)
    return keras.Model(inputs, outputs, name=name)


def feature_shape(backbone: keras.Model) -> tuple[int, ...]:
    """Return the shape of one row of the backbone's features (its first output, without batch).

    Example:
        >>> build_head(feature_shape(backbone), units=3)
    """
    return tuple(backbone.outputs[0].shape[1:])


def infer_loss(head: keras.Model, y: np.ndarray) -> str:
    """Return the Keras loss name matching the head's output activation and targets."""
    last = head.layers[-1]
    activation = keras.activations.serialize(getattr(last, "activation", keras.activations.linear))
    if activation == "softmax":
        return "sparse_categorical_crossentropy" if np.ndim(y) == 1 else "categorical_crossentropy"
    if activation == "sigmoid":
        return "binary_crossentropy"
    return "mse"


def make_trainable(model: keras.Model) -> None:
    """Make every layer of ``model`` trainable again, so a saved backbone carries no freeze state.

    Example:
        >>> make_trainable(fine_tune(...)["backbone"])
    """
    model.trainable = True
    for layer in model.layers:
        layer.trainable = True


def full_model(backbone: keras.Model, head: keras.Model, augment: keras.layers.Layer | None) -> keras.Model:
    """Return backbone (in inference mode) + head as one model to fit.

    A one-input backbone gets one input (named ``"inputs"``: fit it with one array); a several-input
    backbone gets one input per backbone input, by name (fit it with ``{input name: array}``).
    """
    if len(backbone.inputs) > 1:
        if augment is not None:
            raise MLError(
                f"Augmentation applies to one image input; backbone '{backbone.name}' takes "
                f"{len(backbone.inputs)} inputs. Train without augmentation."
            )
        inputs = {
            input_name(spec): keras.Input(tuple(spec.shape[1:]), dtype=spec.dtype, name=input_name(spec))
            for spec in backbone.inputs
        }
        return keras.Model(inputs, head(InferenceMode(backbone)(inputs)))
    spec = backbone.inputs[0]
    inputs = keras.Input(tuple(spec.shape[1:]), dtype=spec.dtype, name="inputs")
    x = augment(inputs) if augment is not None else inputs
    features = InferenceMode(backbone)(x)
    return keras.Model(inputs, head(features))


class InferenceMode(keras.layers.Layer):
    """Call a backbone with ``training=False`` always, while its weights stay trainable.

    Keras 3 overrides ``training=False`` given at functional-graph construction when the
    outer model is fit, so unfrozen BatchNormalization would update its statistics. This
    wrapper keeps BatchNormalization (and Dropout) in inference mode during fine-tuning.
    """

    def __init__(self, backbone: keras.Model, **kwargs: Any) -> None:
        super().__init__(name=f"{backbone.name}_inference", **kwargs)
        self.backbone = backbone

    def call(self, inputs: Any) -> Any:
        return self.backbone(inputs, training=False)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.backbone.compute_output_shape(input_shape)


def metrics_for(loss: str) -> list[str]:
    return ["accuracy"] if "crossentropy" in loss else ["mae"]


def history_of(history: Any) -> dict[str, list[float]]:
    return {key: [float(v) for v in values] for key, values in history.history.items()}


def check_xy(x: Inputs, y: np.ndarray) -> None:
    """Raise unless ``x`` (one array or ``{input name: array}``, all of one row count) has one target per row."""
    rows = num_rows(x)
    if rows != len(y):
        raise InvalidDatasetError(
            f"Expected as many targets as inputs, received {rows} inputs and {len(y)} targets. "
            "Check the dataset's label column."
        )
    if rows == 0:
        raise InvalidDatasetError("Expected at least one example, received an empty dataset.")


def fit_callbacks(epochs: int, progress: ProgressCallback | None, should_cancel: CancelCheck | None) -> list:
    return [ProgressAndCancel(epochs, progress, should_cancel)]
