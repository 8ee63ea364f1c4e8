"""Compare two heads' weights layer by layer, straight from their ``.keras`` files.

Two versions of a head are compared often (the dashboard's compare page, the API), and heads are
small: reading ``model.weights.h5`` with h5py is milliseconds and needs no TensorFlow, so the web
process can do it on request (import this module inside the function that needs it). Layers are
lined up by structure (:func:`modelhub.ml.keras_file.align.align`: class, config and connectivity, not
names), so two heads built alike but named differently still compare.

Outputs compared row by row (max abs diff, top-class agreement) are in :func:`compare_outputs`;
they are plain NumPy over arrays a worker computed.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from modelhub.ml.keras_file.align import Alignment, _structure_difference, align
from modelhub.ml.keras_file.archive import KerasArchive
from modelhub.ml.untrusted import Limits


def relative_l2_change(before: list[np.ndarray], after: list[np.ndarray]) -> float | None:
    """Return ``||after - before|| / ||before||`` over all arrays together (L2, float64).

    Returns 0.0 when both are all zeros, and None when only ``before`` is (the ratio is undefined).

    Example:
        >>> relative_l2_change([np.ones(4)], [np.full(4, 1.5)])
        0.5
    """
    pairs = zip(before, after, strict=True)
    diff = sum(float(np.sum((b.astype(np.float64) - a.astype(np.float64)) ** 2)) for a, b in pairs)
    base = sum(float(np.sum(a.astype(np.float64) ** 2)) for a in before)
    if base == 0.0:
        return 0.0 if diff == 0.0 else None
    return float(np.sqrt(diff) / np.sqrt(base))


def compare_head_weights(path_a: str | os.PathLike[str], path_b: str | os.PathLike[str], **limits: int) -> dict:
    """Compare the weights of head ``b`` with head ``a`` layer by layer, or say how they differ.

    Args:
        path_a, path_b: the two heads' ``.keras`` files, opened through the untrusted-file reader
            (:mod:`modelhub.ml.untrusted`) under ``limits`` (fields of its ``Limits``); every
            weight read is checked there.

    Returns:
        ``{"same_architecture": True, "layers": [{"layer", "class_name", "relative_l2_change",
        "weights": [{"name", "shape", "relative_l2_change"}]}], "relative_l2_change"}`` (per layer
        of ``a`` that has weights, in graph order; the last one over all weights), or
        ``{"same_architecture": False, "difference": str}``.

    Example:
        >>> compare_head_weights("sentiment-v1.keras", "sentiment-v2.keras")["layers"][0]["relative_l2_change"]
        0.031
    """
    checked = Limits.from_kwargs(**limits)
    with KerasArchive(path_a, limits=checked) as a, KerasArchive(path_b, limits=checked) as b:
        a.check_layout()
        b.check_layout()
        a_layers = [n for n in a.graph.nodes if not n.is_input]
        b_layers = [n for n in b.graph.nodes if not n.is_input]
        alignment = align(a, b)
        unmatched = [n for n in a_layers if n.index not in alignment.nodes]
        if unmatched or len(a_layers) != len(b_layers):
            return {"same_architecture": False, "difference": _architecture_difference(a, b, alignment, unmatched)}
        layers, all_a, all_b, seen = [], [], [], set()
        for node in a_layers:
            if node.layer_key in seen:
                continue  # a shared layer: its weights count once
            seen.add(node.layer_key)
            other = b.graph.nodes[alignment.nodes[node.index]]
            state_a = _weights(a, node.layer_key)
            state_b = _weights(b, other.layer_key)
            if [(n, x.shape) for n, x in state_a] != [(n, x.shape) for n, x in state_b]:
                shapes_a = ", ".join(f"{n} {list(x.shape)}" for n, x in state_a)
                shapes_b = ", ".join(f"{n} {list(x.shape)}" for n, x in state_b)
                return {
                    "same_architecture": False,
                    "difference": f"layer '{node.path}' ({node.class_name}) holds {shapes_a} in a, {shapes_b} in b",
                }
            if not state_a:
                continue
            weights = [
                {"name": name, "shape": list(x.shape), "relative_l2_change": relative_l2_change([x], [y])}
                for (name, x), (_, y) in zip(state_a, state_b, strict=True)
            ]
            arrays_a, arrays_b = [x for _, x in state_a], [y for _, y in state_b]
            layers.append(
                {
                    "layer": node.path,
                    "layer_b": other.path,
                    "class_name": node.class_name,
                    "relative_l2_change": relative_l2_change(arrays_a, arrays_b),
                    "weights": weights,
                }
            )
            all_a += arrays_a
            all_b += arrays_b
        return {"same_architecture": True, "layers": layers, "relative_l2_change": relative_l2_change(all_a, all_b)}


def compare_outputs(outputs_a: np.ndarray, outputs_b: np.ndarray) -> dict[str, Any]:
    """Compare two heads' outputs on the same rows: max abs diff and top-class disagreement.

    Args:
        outputs_a, outputs_b: ``[rows, width]`` arrays for the same rows (the shorter one
            decides how many rows are compared).

    Returns:
        ``{"num_rows", "max_abs_diff", "top_class_differs_fraction", "num_top_class_differs"}``;
        ``max_abs_diff`` is None when the widths differ (the top classes still compare).

    Example:
        >>> compare_outputs(np.eye(3), np.eye(3)[[0, 2, 1]])["top_class_differs_fraction"]
        0.6666666666666666
    """
    num_rows = min(len(outputs_a), len(outputs_b))
    a = np.asarray(outputs_a[:num_rows], np.float64).reshape(num_rows, -1)
    b = np.asarray(outputs_b[:num_rows], np.float64).reshape(num_rows, -1)
    same_width = a.shape[1] == b.shape[1]
    max_abs_diff = float(np.max(np.abs(a - b))) if same_width and num_rows else (0.0 if same_width else None)
    differs = int(np.sum(a.argmax(axis=1) != b.argmax(axis=1))) if num_rows else 0
    return {
        "num_rows": int(num_rows),
        "max_abs_diff": max_abs_diff,
        "num_top_class_differs": differs,
        "top_class_differs_fraction": differs / num_rows if num_rows else 0.0,
    }


def _architecture_difference(a: KerasArchive, b: KerasArchive, alignment: Alignment, unmatched: list) -> str:
    """Say where the two heads' structures part (the first layer of a without a counterpart in b)."""
    counts = ""
    a_layers = [n for n in a.graph.nodes if not n.is_input]
    b_layers = [n for n in b.graph.nodes if not n.is_input]
    if len(a_layers) != len(b_layers):
        counts = f"a has {len(a_layers)} layers ({_classes(a_layers)}), b has {len(b_layers)} ({_classes(b_layers)})"
    first = next((n for n in unmatched if all(p in alignment.nodes for p in n.parents)), None)
    if first is None:
        inputs_a = [a.graph.tensors[(i, 0)]["shape"] for i in a.graph.inputs]
        inputs_b = [b.graph.tensors[(i, 0)]["shape"] for i in b.graph.inputs]
        where = f"inputs {inputs_a} in a, {inputs_b} in b" if inputs_a != inputs_b else ""
        return "; ".join(part for part in (where, counts) if part) or "the layers are connected differently"
    where = _structure_difference(first, alignment.nodes, a.graph, b.graph).replace("the reference", "a")
    return "; ".join(part for part in (where.replace(" here", " in b"), counts) if part)


def _weights(archive: KerasArchive, layer_key: str) -> list[tuple[str, np.ndarray]]:
    return [(name, array) for name, array in archive.layer_state(layer_key) if not name.startswith("assets/")]


def _classes(nodes: list) -> str:
    names = [node.class_name for node in nodes]
    return ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
