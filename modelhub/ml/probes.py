"""Probe inputs and the closeness check: how every rebuilt model is held against its original.

A head cut from a full model, a branch on its trunk, a grown backbone and an assembled
SavedModel are each run on a few deterministic probe rows (:func:`probe_inputs_for`) beside
the model they replace, and must agree within the one tolerance
(:data:`modelhub.ml.tolerance.VERIFY_TOLERANCE`, checked by :func:`check_close`).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from modelhub.ml.errors import HeadExtractionError
from modelhub.ml.inspect import graph_nodes, input_name, iter_leaf_layers
from modelhub.ml.tolerance import VERIFY_TOLERANCE

PROBE_WORDS = ("the", "a", "model", "cat", "runs", "fast", "blue", "data", "under", "zebra", "qux")


def probe_inputs_for(model: Any, *, num_rows: int = 4, seed: int = 0) -> Any:
    """Return deterministic inputs for ``model``: one array, or a dict by input name.

    Floats are standard normal; integer inputs that feed an Embedding stay below its
    ``input_dim`` (other integers are 0 or 1); string inputs are short sentences of
    common words and of words from the model's own vocabulary.

    Example:
        >>> probe_inputs_for(text_model)["text"][:1]
        array([['cat the blue']], dtype=object)
    """
    rng = np.random.default_rng(seed)
    limits = _integer_limits(model)
    vocabulary = _string_vocabulary(model)
    arrays = {}
    for tensor in model.inputs:
        name = input_name(tensor)
        shape = [num_rows] + [1 if d is None else int(d) for d in tensor.shape[1:]]
        dtype = str(tensor.dtype)
        if dtype == "string":
            words = list(PROBE_WORDS) + vocabulary[:50]
            flat = [" ".join(rng.choice(words, size=int(rng.integers(1, 6)))) for _ in range(int(np.prod(shape)))]
            arrays[name] = np.array(flat, dtype=object).reshape(shape)
        elif np.issubdtype(np.dtype(dtype), np.integer) or dtype == "bool":
            high = limits.get(name, 2)
            arrays[name] = rng.integers(0, max(high, 1), size=shape).astype(dtype)
        else:
            arrays[name] = rng.standard_normal(shape).astype(dtype)
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    return arrays


def _integer_limits(model: Any) -> dict[str, int]:
    """Map integer input names to the input_dim of the first Embedding they reach."""
    limits: dict[str, int] = {}
    producer: dict[int, str] = {id(tensor): input_name(tensor) for tensor in model.inputs}
    for layer, node in graph_nodes(model):
        sources = {producer[id(t)] for t in node.input_tensors if id(t) in producer}
        if not sources:
            continue
        if isinstance(layer, keras.layers.Embedding):
            for source in sources:
                limits[source] = min(limits.get(source, layer.input_dim), int(layer.input_dim))
        elif not getattr(layer, "weights", None) and not isinstance(layer, keras.Model):
            for tensor in node.output_tensors:
                producer[id(tensor)] = next(iter(sources))
    return limits


def _string_vocabulary(model: Any) -> list[str]:
    for layer in iter_leaf_layers(model):
        if hasattr(layer, "get_vocabulary"):
            try:
                words = [str(w) for w in layer.get_vocabulary() if isinstance(w, str) and w and not w.startswith("[")]
            except Exception:  # noqa: BLE001 - a layer without a vocabulary yet
                continue
            if words:
                return words
    return []


def check_close(expected: np.ndarray, got: np.ndarray, *, what: str, error=HeadExtractionError, rtol=VERIFY_TOLERANCE):
    """Raise ``error`` unless max|expected - got| <= rtol * max(1, max|expected|).

    Returns:
        ``{"max_abs_diff", "max_rel_diff", "tolerance"}``; the relative figure is the
        absolute one divided by ``max(1, max|expected|)``.
    """
    expected = np.asarray(expected, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    if expected.shape != got.shape:
        raise error(f"Expected {what} to return shape {list(expected.shape)}, got {list(got.shape)}.")
    scale = max(1.0, float(np.max(np.abs(expected))) if expected.size else 1.0)
    diff = float(np.max(np.abs(expected - got))) if expected.size else 0.0
    tolerance = rtol * scale
    if not diff <= tolerance:
        raise error(
            f"Expected {what} to reproduce the original within {tolerance:.3g} ({rtol:g} x max(1, max |output|) "
            f"= {rtol:g} x {scale:.4g}), max abs diff is {diff:.3g} (relative {diff / scale:.3g})."
        )
    return {"max_abs_diff": diff, "max_rel_diff": diff / scale, "tolerance": tolerance}
