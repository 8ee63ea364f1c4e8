"""Compute backbone features once and cache them per (backbone fingerprint, dataset).

Training many heads on a frozen backbone only needs the features. They are computed
in batches and stored as ``.npy`` files under a cache directory the caller owns, keyed
by the backbone's weights fingerprint and the sha256 of the input array.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import keras
import numpy as np

from modelhub.ml.errors import InvalidDatasetError
from modelhub.ml.inspect import weights_fingerprint


def dataset_sha256(x: np.ndarray) -> str:
    """Return a sha256 over the array's dtype, shape and bytes."""
    array = np.ascontiguousarray(x)
    digest = hashlib.sha256(f"{array.dtype.str}:{list(array.shape)}\n".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def compute_features(backbone: keras.Model, x: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """Run the backbone in inference mode over ``x`` in batches.

    Returns:
        float32 features, one row per input row.

    Example:
        >>> compute_features(backbone, images).shape
        (2000, 1280)
    """
    _check_inputs(backbone, x)
    predict = _predict_function(backbone)
    parts = [np.asarray(predict(x[start : start + batch_size])) for start in range(0, len(x), batch_size)]
    if not parts:
        return np.zeros((0, *backbone.outputs[0].shape[1:]), np.float32)
    return np.concatenate(parts).astype(np.float32, copy=False)


def cached_features(
    backbone: keras.Model,
    x: np.ndarray,
    *,
    cache_dir: str | os.PathLike[str],
    batch_size: int = 64,
    fingerprint: str | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Return the backbone features of ``x``, from the cache when present.

    Args:
        backbone: the (frozen) backbone.
        x: inputs.
        cache_dir: directory holding ``<fingerprint>-<dataset sha>.npy`` files.
        batch_size: rows per forward pass.
        fingerprint: the backbone's weights fingerprint if already known.

    Returns:
        ``(features, {"hit": bool, "path": str, "backbone_sha256": str, "dataset_sha256": str})``.

    Example:
        >>> features, info = cached_features(backbone, images, cache_dir="cache/")
    """
    fingerprint = fingerprint or weights_fingerprint(backbone)
    data_sha = dataset_sha256(x)
    directory = Path(cache_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{fingerprint}-{data_sha}.npy"
    info = {"path": str(path), "backbone_sha256": fingerprint, "dataset_sha256": data_sha}
    if path.exists():
        features = np.load(path, allow_pickle=False)
        if features.shape[0] == len(x):
            return features, {"hit": True, **info}
    features = compute_features(backbone, x, batch_size=batch_size)
    handle, tmp_name = tempfile.mkstemp(dir=directory, suffix=".npy.tmp")
    with os.fdopen(handle, "wb") as tmp:
        np.save(tmp, features, allow_pickle=False)
    os.replace(tmp_name, path)
    return features, {"hit": False, **info}


def _predict_function(backbone: keras.Model) -> Any:
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def predict(batch: Any) -> Any:
        return backbone(batch, training=False)

    return predict


def _check_inputs(backbone: keras.Model, x: np.ndarray) -> None:
    expected = list(backbone.inputs[0].shape[1:])
    received = list(np.shape(x)[1:])
    if len(expected) != len(received) or any(e is not None and e != r for e, r in zip(expected, received, strict=True)):
        raise InvalidDatasetError(
            f"Expected inputs of shape [N, {', '.join(str(d) for d in expected)}] for backbone "
            f"'{backbone.name}', received {list(np.shape(x))}. Resize or reshape the dataset."
        )
