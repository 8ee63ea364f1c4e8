"""Score a head on a backbone: loss and accuracy (or MAE), its outputs, and validation metrics.

The figures users see for a head version (an evaluate job, a training job's validation) come
from here, computed with Keras on the backbone's features.
"""

from __future__ import annotations

import os

import keras
import numpy as np

from modelhub.ml.errors import InvalidDatasetError
from modelhub.ml.features import Inputs, cached_features, compute_features, num_rows
from modelhub.ml.train.model import check_xy, infer_loss


def evaluate_head(
    backbone: keras.Model, head: keras.Model, x: Inputs, y: np.ndarray, *, batch_size: int = 64
) -> dict[str, float]:
    """Evaluate ``head`` through ``backbone`` on ``(x, y)`` (inference mode).

    Returns:
        ``{"loss": float, "num_examples": int}`` plus ``"accuracy"`` for softmax/sigmoid
        heads or ``"mae"`` for linear heads.

    Example:
        >>> evaluate_head(new_backbone, head, x_val, y_val)["accuracy"]
    """
    return evaluate_head_outputs(backbone, head, x, y, batch_size=batch_size)[0]


def evaluate_head_outputs(
    backbone: keras.Model,
    head: keras.Model,
    x: Inputs,
    y: np.ndarray,
    *,
    batch_size: int = 64,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[dict[str, float], np.ndarray]:
    """Evaluate ``head`` through a frozen ``backbone`` on ``(x, y)``; return its metrics and outputs.

    Args:
        backbone, head: the models (the backbone runs in inference mode).
        x, y: inputs and targets (class ids, one-hot rows, or values of the head's width).
        batch_size: rows per forward pass.
        cache_dir: when given, backbone features are read from / written to this feature cache.

    Returns:
        ``(metrics, outputs)``: metrics as :func:`evaluate_head` returns them, and the head's
        float32 outputs ``[len(x), width]``.

    Example:
        >>> metrics, outputs = evaluate_head_outputs(bb, head, x_val, y_val)
        >>> metrics["accuracy"] == np.mean(outputs.argmax(1) == y_val)
    """
    check_xy(x, y)
    if cache_dir is not None:
        features = cached_features(backbone, x, cache_dir=cache_dir, batch_size=batch_size)[0]
    else:
        features = compute_features(backbone, x, batch_size=batch_size)
    outputs = np.asarray(head.predict(features, batch_size=batch_size, verbose=0), np.float32)
    outputs = outputs.reshape(num_rows(x), -1)
    _check_targets(outputs, np.asarray(y))
    predictions = outputs.astype(np.float64)
    loss_name = infer_loss(head, y)
    loss_value = float(np.mean(np.asarray(keras.losses.get(loss_name)(y, predictions))))
    result: dict[str, float] = {"loss": loss_value, "num_examples": int(num_rows(x))}
    if loss_name == "sparse_categorical_crossentropy":
        result["accuracy"] = float(np.mean(np.argmax(predictions, axis=-1) == np.asarray(y).reshape(-1)))
    elif loss_name == "categorical_crossentropy":
        result["accuracy"] = float(np.mean(np.argmax(predictions, -1) == np.argmax(y, -1)))
    elif loss_name == "binary_crossentropy":
        result["accuracy"] = float(np.mean((predictions > 0.5) == (np.asarray(y).reshape(predictions.shape) > 0.5)))
    else:
        result["mae"] = float(np.mean(np.abs(predictions - np.asarray(y).reshape(predictions.shape))))
    return result, outputs


def _check_targets(outputs: np.ndarray, y: np.ndarray) -> None:
    """Raise unless targets fit a head's outputs: class ids below its width, or rows of its width."""
    width = outputs.shape[1]
    if np.issubdtype(y.dtype, np.integer) and y.ndim == 1:
        if width > 1 and (y.min() < 0 or y.max() >= width):
            raise InvalidDatasetError(
                f"Expected class ids in 0..{width - 1} for a head with {width} outputs, received labels "
                f"{int(y.min())}..{int(y.max())}. Evaluate it on a dataset with at most {width} classes."
            )
        return
    if y.reshape(len(y), -1).shape[1] != width:
        raise InvalidDatasetError(
            f"Expected targets of {width} values per row for a head with {width} outputs, received "
            f"{y.reshape(len(y), -1).shape[1]}. Evaluate it on a dataset whose targets match its outputs."
        )


def head_validation_metrics(head: keras.Model, features: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Score a head on precomputed backbone features: the metrics a run reports as ``val_*``.

    Integer targets are class ids (cross-entropy loss and accuracy); other targets are values
    (mean squared error and mean absolute error).

    Returns:
        ``{"val_loss", "val_accuracy"}`` for class ids, ``{"val_loss", "val_mae"}`` for values.

    Example:
        >>> head_validation_metrics(head, cached_features(bb, x_val, cache_dir=d)[0], y_val)
    """
    check_xy(features, y)
    predictions = np.asarray(head(features, training=False))
    y = np.asarray(y)
    if np.issubdtype(y.dtype, np.integer):
        probabilities = np.clip(predictions[np.arange(len(y)), y], 1e-7, 1.0)
        return {
            "val_loss": float(-np.mean(np.log(probabilities))),
            "val_accuracy": float(np.mean(predictions.argmax(axis=1) == y)),
        }
    error = predictions.reshape(len(y), -1) - y.astype(np.float32).reshape(len(y), -1)
    return {"val_loss": float(np.mean(error**2)), "val_mae": float(np.mean(np.abs(error)))}
