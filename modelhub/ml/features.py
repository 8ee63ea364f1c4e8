"""Compute backbone features once and cache them per (backbone fingerprint, dataset).

Training many heads on a frozen backbone only needs the features. They are computed
in batches and stored as ``.npy`` files under a cache directory the caller owns, keyed
by the backbone's weights fingerprint and the sha256 of the inputs.

Inputs are one array (a one-input backbone) or a dict ``{input name: array}`` (any
backbone, by its input names). String inputs are numpy arrays of ``str`` (dtype object
or ``<U``). Every input holds one row per example; the helpers here count, slice, hash and
check them the same way for every kind of training.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np

from modelhub.ml.errors import InvalidDatasetError
from modelhub.ml.inspect import input_name, weights_fingerprint

Inputs = np.ndarray | Mapping[str, np.ndarray]


def is_string_array(array: Any) -> bool:
    """Return True for a numpy array of text (dtype object or ``<U``)."""
    return np.asarray(array).dtype.kind in ("O", "U")


def num_rows(x: Inputs) -> int:
    """Return the number of examples in ``x``; raise when its inputs disagree.

    Example:
        >>> num_rows({"token_ids": np.zeros((5, 7)), "numeric": np.zeros((5, 3))})
        5
    """
    if not isinstance(x, Mapping):
        return len(x)
    if not x:
        raise InvalidDatasetError("Expected at least one named input, received an empty dict of inputs.")
    counts = {name: len(array) for name, array in x.items()}
    if len(set(counts.values())) != 1:
        listed = ", ".join(f"'{name}' {count}" for name, count in sorted(counts.items()))
        raise InvalidDatasetError(
            f"Expected every input to hold one row per example, received different row counts: {listed}. "
            "Give every input the same number of rows."
        )
    return next(iter(counts.values()))


def take_rows(x: Inputs, rows: Any) -> Inputs:
    """Return the rows ``rows`` (a slice or index array) of every input, in the same order."""
    if isinstance(x, Mapping):
        return {name: array[rows] for name, array in x.items()}
    return x[rows]


def keras_inputs(x: Inputs) -> Any:
    """Return ``x`` ready for ``keras.Model.fit``: string arrays become ``tf.string`` tensors.

    Keras refuses numpy object arrays, and converts numbers itself; numeric inputs are returned as they are.
    """
    import tensorflow as tf

    def convert(array: np.ndarray) -> Any:
        return tf.constant(np.asarray(array).astype(object)) if is_string_array(array) else array

    if isinstance(x, Mapping):
        return {name: convert(array) for name, array in x.items()}
    return convert(x)


def dataset_sha256(x: Inputs) -> str:
    """Return a sha256 over the inputs: dtype, shape and bytes of each, by sorted input name.

    Strings are hashed as their UTF-8 bytes, each prefixed by its length, so ``["ab", "c"]`` and
    ``["a", "bc"]`` differ. A plain numeric array hashes as it always has (cached features stay valid).
    """
    if isinstance(x, Mapping):
        digest = hashlib.sha256(b"inputs-by-name\n")
        for name in sorted(x):
            digest.update(f"{len(name.encode())}:{name}={dataset_sha256(x[name])}\n".encode())
        return digest.hexdigest()
    array = np.asarray(x)
    if is_string_array(array):
        digest = hashlib.sha256(f"strings:{list(array.shape)}\n".encode())
        for value in array.reshape(-1):
            data = value if isinstance(value, bytes) else str(value).encode("utf-8")
            digest.update(struct.pack("<Q", len(data)))
            digest.update(data)
        return digest.hexdigest()
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}:{list(array.shape)}\n".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def compute_features(backbone: keras.Model, x: Inputs, *, batch_size: int = 64) -> np.ndarray:
    """Run the backbone in inference mode over ``x`` in batches.

    Args:
        backbone: the backbone.
        x: one array (a one-input backbone) or ``{input name: array}``; strings as arrays of ``str``.
        batch_size: rows per forward pass.

    Returns:
        float32 features, one row per input row.

    Example:
        >>> compute_features(backbone, images).shape
        (2000, 1280)
        >>> compute_features(text_backbone, {"text": np.array([["a b"], ["c"]], dtype=object)}).shape
        (2, 16)
    """
    x = check_inputs(backbone, x)
    total = num_rows(x)
    predict = _predict_function(backbone)
    parts = [
        np.asarray(predict(_tensors(take_rows(x, slice(start, start + batch_size)))))
        for start in range(0, total, batch_size)
    ]
    if not parts:
        return np.zeros((0, *backbone.outputs[0].shape[1:]), np.float32)
    return np.concatenate(parts).astype(np.float32, copy=False)


def cached_features(
    backbone: keras.Model,
    x: Inputs,
    *,
    cache_dir: str | os.PathLike[str],
    batch_size: int = 64,
    fingerprint: str | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Return the backbone features of ``x``, from the cache when present.

    Args:
        backbone: the (frozen) backbone.
        x: inputs, as :func:`compute_features` takes them.
        cache_dir: directory holding ``<fingerprint>-<dataset sha>.npy`` files.
        batch_size: rows per forward pass.
        fingerprint: the backbone's weights fingerprint if already known.

    Returns:
        ``(features, {"hit": bool, "path": str, "backbone_sha256": str, "dataset_sha256": str})``.

    Example:
        >>> features, info = cached_features(backbone, images, cache_dir="cache/")
    """
    x = check_inputs(backbone, x)
    fingerprint = fingerprint or weights_fingerprint(backbone)
    data_sha = dataset_sha256(x)
    directory = Path(cache_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{fingerprint}-{data_sha}.npy"
    info = {"path": str(path), "backbone_sha256": fingerprint, "dataset_sha256": data_sha}
    if path.exists():
        features = np.load(path, allow_pickle=False)
        if features.shape[0] == num_rows(x):
            return features, {"hit": True, **info}
    features = compute_features(backbone, x, batch_size=batch_size)
    handle, tmp_name = tempfile.mkstemp(dir=directory, suffix=".npy.tmp")
    with os.fdopen(handle, "wb") as tmp:
        np.save(tmp, features, allow_pickle=False)
    os.replace(tmp_name, path)
    return features, {"hit": False, **info}


def check_inputs(backbone: keras.Model, x: Inputs) -> Inputs:
    """Return ``x`` as ``backbone`` takes it, or raise saying what it expected and what it received.

    A one-input backbone takes one array (a dict holding only its input is unwrapped); a
    several-input backbone takes ``{input name: array}`` with exactly its input names. Each
    input must have the backbone's per-row shape (``None`` matches any length) and kind
    (text for a string input, numbers otherwise), and all inputs the same number of rows.

    Example:
        >>> check_inputs(two_input_backbone, {"token_ids": ids, "numeric": values})
    """
    names = [input_name(tensor) for tensor in backbone.inputs]
    if isinstance(x, Mapping):
        if sorted(x) != sorted(names):
            raise InvalidDatasetError(
                f"Expected the inputs {_describe_model_inputs(backbone)} of backbone '{backbone.name}', received "
                f"{_describe_arrays(x)}. Name each input array after the backbone input it feeds."
            )
        num_rows(x)
        if len(names) == 1:
            x = x[names[0]]
    elif len(names) != 1:
        raise InvalidDatasetError(
            f"Expected the inputs {_describe_model_inputs(backbone)} of backbone '{backbone.name}' by name, received "
            f"one unnamed array of shape {list(np.shape(x))}. Pass a dict {{input name: array}}."
        )
    arrays = x if isinstance(x, Mapping) else {names[0]: x}
    for tensor in backbone.inputs:
        name = input_name(tensor)
        _check_one_input(backbone, name, tensor, arrays[name])
    return x


def _check_one_input(backbone: keras.Model, name: str, tensor: Any, array: np.ndarray) -> None:
    expected = list(tensor.shape[1:])
    received = list(np.shape(array)[1:])
    if len(expected) != len(received) or any(e is not None and e != r for e, r in zip(expected, received, strict=True)):
        raise InvalidDatasetError(
            f"Expected input '{name}' of shape [N, {', '.join(str(d) for d in expected)}] for backbone "
            f"'{backbone.name}', received {list(np.shape(array))}. Resize or reshape the dataset."
        )
    wants_text = str(tensor.dtype) == "string"
    if wants_text != is_string_array(array):
        raise InvalidDatasetError(
            f"Expected input '{name}' of backbone '{backbone.name}' to be "
            f"{'text (strings)' if wants_text else f'numbers ({tensor.dtype})'}, received an array of dtype "
            f"{np.asarray(array).dtype}. Give it {'a text column' if wants_text else 'a numeric column'}."
        )


def _describe_model_inputs(backbone: keras.Model) -> str:
    return ", ".join(
        f"'{input_name(tensor)}' ({tensor.dtype}, [{', '.join(str(d) for d in tensor.shape[1:])}])"
        for tensor in backbone.inputs
    )


def _describe_arrays(x: Mapping[str, np.ndarray]) -> str:
    return ", ".join(f"'{name}' ({np.asarray(array).dtype}, {list(np.shape(array))})" for name, array in x.items())


def _tensors(x: Inputs) -> Any:
    """Return a batch for the traced predict function (strings as ``tf.string`` tensors)."""
    return keras_inputs(x)


def _predict_function(backbone: keras.Model) -> Any:
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def predict(batch: Any) -> Any:
        return backbone(batch, training=False)

    return predict
