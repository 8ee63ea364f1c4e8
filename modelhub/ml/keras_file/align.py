"""Line two flat graphs up by structure and weights, and say where one can be cut.

Two files of one family rarely name their layers alike; they are lined up by class, config
and connectivity (:func:`align`), and their weights are compared straight from the weights
files. A cut (:func:`cut_error`) splits a graph into a backbone and a head when nothing above
the cut reads anything below it but the cut's tensor.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelhub.ml.errors import BackboneMismatchError
from modelhub.ml.keras_file.archive import KerasArchive
from modelhub.ml.keras_file.graph import (
    REF_KEY,
    FlatGraph,
    FlatNode,
    TensorRef,
    iter_refs,
    map_refs,
    normalized_layer_config,
)


@dataclass
class Alignment:
    """How a candidate model's flat graph lines up with a reference's.

    Attributes:
        nodes: reference node index -> candidate node index, for nodes with the same
            class, config and connectivity.
        identical: reference nodes whose weights (and every ancestor's) are also
            bit-identical.
        first_difference: a message naming the first reference node (in graph order)
            that is not identical, or None.
        first_node: that node's index, or None.
    """

    nodes: dict[int, int]
    identical: set[int]
    first_difference: str | None
    first_node: int | None = None


def align(reference: KerasArchive, candidate: KerasArchive, *, stop_at: int | None = None) -> Alignment:
    """Line ``candidate`` up with ``reference`` by structure, then compare weights.

    Nodes are matched from the inputs forward: a reference node matches the first
    unused candidate node of the same class and config that reads the matched
    tensors. Nesting does not matter. Weights are compared bit for bit.

    Args:
        reference: the reference model.
        candidate: the model to compare.
        stop_at: when given, only this reference node and its ancestors are compared.

    Returns:
        The :class:`Alignment`.
    """
    ref_graph, cand_graph = reference.graph, candidate.graph
    wanted = ref_graph.ancestors(stop_at) if stop_at is not None else None
    mapping: dict[int, int] = {}
    identical: set[int] = set()
    first: tuple[int, str] | None = None

    def note(index: int, message: str) -> None:
        nonlocal first
        if first is None or index < first[0]:
            first = (index, message)

    ref_inputs = [ref_graph.nodes[i] for i in ref_graph.inputs]
    cand_inputs = [cand_graph.nodes[i] for i in cand_graph.inputs]
    if {n.name for n in ref_inputs} == {n.name for n in cand_inputs}:
        by_name = {n.name: n for n in cand_inputs}
        pairs = [(n, by_name[n.name]) for n in ref_inputs]
    else:
        pairs = list(zip(ref_inputs, cand_inputs, strict=False))
    for ref_node, cand_node in pairs:
        ref_spec = ref_graph.tensors[(ref_node.index, 0)]
        cand_spec = cand_graph.tensors[(cand_node.index, 0)]
        if [ref_spec["shape"], ref_spec["dtype"]] == [cand_spec["shape"], cand_spec["dtype"]]:
            mapping[ref_node.index] = cand_node.index
            identical.add(ref_node.index)
        else:
            note(
                ref_node.index,
                f"input '{ref_node.name}' is {ref_spec['dtype']}{ref_spec['shape']} in the reference and "
                f"{cand_spec['dtype']}{cand_spec['shape']} here",
            )
    if len(ref_inputs) != len(cand_inputs):
        note(0, f"the reference has {len(ref_inputs)} inputs, this model has {len(cand_inputs)}")

    index_by_key: dict[Any, list[int]] = {}
    for node in cand_graph.nodes:
        if not node.is_input:
            index_by_key.setdefault(_node_key(node, None), []).append(node.index)
    used: set[int] = set()
    layer_pairs: dict[str, str] = {}
    for node in ref_graph.nodes:
        if node.is_input or (wanted is not None and node.index not in wanted):
            continue
        if not all(parent in mapping for parent in node.parents):
            continue  # an ancestor already differs; the first difference is recorded there
        key = _node_key(node, mapping)
        match = next((c for c in index_by_key.get(key, []) if c not in used), None)
        if match is None:
            note(node.index, _structure_difference(node, mapping, ref_graph, cand_graph))
            continue
        used.add(match)
        mapping[node.index] = match
        if not all(parent in identical for parent in node.parents):
            continue
        cand_node = cand_graph.nodes[match]
        known = layer_pairs.get(node.layer_key)
        if known is not None and known != cand_node.layer_key:
            note(node.index, f"layer '{node.path}' is shared in the reference but not here")
            continue
        layer_pairs[node.layer_key] = cand_node.layer_key
        difference = _state_difference(
            reference.layer_state(node.layer_key), candidate.layer_state(cand_node.layer_key)
        )
        if difference is None:
            identical.add(node.index)
        else:
            note(node.index, f"layer '{node.path}' ({node.class_name}) {difference}")
    if first is None:
        return Alignment(mapping, identical, None)
    return Alignment(mapping, identical, first[1], first[0])


def _node_key(node: FlatNode, mapping: dict[int, int] | None) -> Any:
    if mapping is None:
        call = node.call
    else:
        call = map_refs(node.call, lambda ref: {REF_KEY: [mapping[ref[0]], ref[1]]})
    return json.dumps([normalized_layer_config(node.layer), call], sort_keys=True, default=str)


def _structure_difference(node: FlatNode, mapping: dict[int, int], ref_graph: FlatGraph, cand_graph: FlatGraph) -> str:
    mapped_parents = [mapping[p] for p in node.parents]
    rivals = [n for n in cand_graph.nodes if not n.is_input and n.parents == mapped_parents] or [
        n for n in cand_graph.nodes if not n.is_input and n.name == node.name
    ]
    if not rivals:
        return f"layer '{node.path}' ({node.class_name}) has no counterpart reading the same tensors"
    rival = rivals[0]
    if rival.class_name != node.class_name:
        return (
            f"layer '{node.path}' is a {node.class_name} in the reference but a {rival.class_name} "
            f"('{rival.path}') here"
        )
    ref_config = normalized_layer_config(node.layer)[2]
    cand_config = normalized_layer_config(rival.layer)[2]
    keys = sorted(k for k in set(ref_config) | set(cand_config) if ref_config.get(k) != cand_config.get(k))
    if keys:
        shown = ", ".join(f"{k}: {ref_config.get(k)!r} vs {cand_config.get(k)!r}" for k in keys[:3])
        return f"layer '{node.path}' ({node.class_name}) has another config ({shown})"
    return f"layer '{node.path}' ({node.class_name}) is called differently (other arguments or inputs)"


def _state_difference(reference: list[tuple[str, np.ndarray]], candidate: list[tuple[str, np.ndarray]]) -> str | None:
    if [name for name, _ in reference] != [name for name, _ in candidate]:
        return f"stores {len(reference)} weights in the reference and {len(candidate)} here"
    for (name, a), (_, b) in zip(reference, candidate, strict=True):
        if a.shape != b.shape or a.dtype != b.dtype:
            return f"weight '{name}' is {a.dtype}{list(a.shape)} in the reference and {b.dtype}{list(b.shape)} here"
        if a.tobytes() != b.tobytes():
            if name.startswith("assets/"):
                return f"asset '{name[7:]}' (a vocabulary) differs"
            if a.dtype.kind in "fiub":
                diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
                return f"weight '{name}' differs: max abs diff {diff:.6g}"
            return f"weight '{name}' differs"
    return None


def cut_error(graph: FlatGraph, feature: TensorRef) -> str | None:
    """Return why ``feature`` does not split ``graph`` into backbone and head, or None.

    A valid cut: every node after it (the head) reads only the feature tensor or
    other head nodes, and every model output comes from the head.
    """
    index, output = feature
    if graph.nodes[index].is_input:
        return "it is a model input, so the backbone would be empty"
    backbone = graph.ancestors(index)
    head = {node.index for node in graph.nodes if node.index not in backbone}
    if not head:
        return "nothing comes after it, so the head would be empty"
    for node_index in sorted(head):
        node = graph.nodes[node_index]
        if node.is_input:
            return f"the head reads the model input '{node.name}' directly"
        for ref in graph.read_refs(node_index):
            if ref[0] in head or ref == feature:
                continue
            source = graph.nodes[ref[0]]
            if source.is_input:
                return f"layer '{node.path}' after it also reads the model input '{source.name}' directly"
            return (
                f"layer '{node.path}' after it also reads '{source.path}' (a skip connection around it)"
                if ref[0] != index
                else f"layer '{node.path}' reads another output of it"
            )
    for ref in graph.outputs:
        if ref[0] not in head:
            return f"the model output comes from '{graph.nodes[ref[0]].path}', before or at it"
    return None


def feature_candidates(graph: FlatGraph, nodes: Iterable[int]) -> list[TensorRef]:
    """Return the tensors of ``nodes`` that other nodes read, deepest node first."""
    consumers_refs: dict[int, set[TensorRef]] = {}
    for node in graph.nodes:
        for ref in iter_refs(node.call):
            consumers_refs.setdefault(ref[0], set()).add(ref)
    result = []
    for index in sorted(nodes, reverse=True):
        refs = sorted(consumers_refs.get(index, set()))
        if len(refs) == 1:
            result.append(refs[0])
    return result


def map_ref(alignment: Alignment, ref: TensorRef) -> TensorRef:
    """Return the candidate tensor that matches a reference tensor."""
    return (alignment.nodes[ref[0]], ref[1])


def require_identical_backbone(alignment: Alignment, graph: FlatGraph, feature: TensorRef, *, label: str) -> None:
    """Raise BackboneMismatchError unless every backbone node is identical in the candidate."""
    needed = graph.ancestors(feature[0])
    if needed <= alignment.identical:
        return
    message = alignment.first_difference or "its backbone does not line up with the reference"
    raise BackboneMismatchError(
        f"Expected {label} to share the reference backbone bit for bit, but {message}. The model was "
        "trained or fine-tuned past this backbone; import it separately or upload its backbone as a new version."
    )
