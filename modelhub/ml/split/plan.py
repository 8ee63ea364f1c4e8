"""Pass 1 of splitting a family: check every file against a reference and choose where to cut.

Each file is opened (through the untrusted-file reader), lined up with the reference by
structure (:func:`modelhub.ml.keras_file.align.align`) and closed again, so one file at a
time is open beside the reference. From what was seen, the planner picks the feature tensor
(named, or the deepest one every model shares bit for bit) and, with branches, each file's
branch point. :mod:`modelhub.ml.split.family` builds the models from this plan (pass 2).
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelhub.ml.errors import BackboneMismatchError, FamilySplitError, HeadExtractionError, LayerNotFoundError, MLError
from modelhub.ml.keras_file.align import (
    Alignment,
    align,
    cut_error,
    feature_candidates,
    map_ref,
    require_identical_backbone,
)
from modelhub.ml.keras_file.archive import KerasArchive
from modelhub.ml.keras_file.graph import OPERATION_KEY_PREFIX, FlatGraph, TensorRef
from modelhub.ml.keras_file.submodel import submodel_layer_names
from modelhub.ml.split.single import output_names

DEFAULT_MIN_SHARED_FRACTION = 0.5


@dataclass
class SeenFile:
    graph: FlatGraph
    alignment: Alignment | None  # None for the reference
    feature: TensorRef | None = None
    point: TensorRef | None = None  # with branches: the reference tensor it branches after
    outputs: list[str] = field(default_factory=list)  # one name per model output (output_names)
    head_names: list[str] = field(default_factory=list)  # ModelSource.name_heads(outputs), or []
    # With branches: reference node index -> sha256 of this file's weights for it (a file's
    # backbone fingerprint, computed for any feature layer; see FamilyPlanner._majority).
    node_hashes: dict[int, bytes] = field(default_factory=dict)


class FamilyPlanner:
    """Pass 1 over the sources: the reference, every file lined up with it, the cut and the branch points."""

    def __init__(self, sources, feature_layer, on_head, check_file, min_shared_fraction, backbone_name, work, branches):
        self.sources = list(sources)
        self.feature_layer = feature_layer
        self.on_head = on_head
        self.check_file = check_file
        self.min_shared_fraction = min_shared_fraction
        self.backbone_name = backbone_name
        self.work = work
        self.errors: dict[int, str] = {}
        self.seen: dict[int, SeenFile] = {}
        self.reference: KerasArchive | None = None
        self.reference_index: int | None = None
        self.branches = branches
        self.trunk: dict[str, Any] | None = None
        self.backbone_names: dict[int, str] = {}
        self.order = list(range(len(self.sources)))  # the order pass 1 reads the files in
        self.reference_choice: dict[str, Any] | None = None

    def _restart(self, first: int) -> None:
        """Forget pass 1 and read the files again with ``first`` as the reference (then the rest in order)."""
        if self.reference is not None:
            self.reference.close()
            self._discard(self.reference_index)
        self.reference, self.reference_index = None, None
        self.errors, self.seen = {}, {}
        self.trunk, self.backbone_names = None, {}
        self.order = [first, *(index for index in range(len(self.sources)) if index != first)]

    def _open(self, index: int) -> KerasArchive:
        folder = self.work / f"file-{index}"
        folder.mkdir(exist_ok=True)
        path = self.sources[index].fetch(folder)
        self.check_file(path)
        opened = KerasArchive(path)
        try:
            opened.check_layout()
        except Exception:
            opened.close()
            raise
        return opened

    def _discard(self, index: int) -> None:
        shutil.rmtree(self.work / f"file-{index}", ignore_errors=True)

    def _analyse(self, index: int) -> None:
        try:
            opened = self._open(index)
        except MLError as error:
            self.errors[index] = str(error)
            self._discard(index)
            return
        try:
            outputs, head_names = self._name_heads(index, opened)
        except (MLError, ValueError) as error:
            self.errors[index] = str(error)
            opened.close()
            self._discard(index)
            return
        if self.reference is None:
            try:
                feature = self._named_feature(opened.graph) if self.feature_layer is not None else None
            except MLError as error:
                self.errors[index] = str(error)
                opened.close()
                self._discard(index)
                return
            self.seen[index] = SeenFile(opened.graph, None, feature, outputs=outputs, head_names=head_names)
            if self.branches:
                self.seen[index].node_hashes = {
                    node.index: _state_hash(opened.layer_state(node.layer_key)) for node in opened.graph.nodes
                }
            self.reference = opened
            self.reference_index = index
            # Files seen before the reference failed on their own; nothing to align them with.
            return
        try:
            self._analyse_candidate(index, opened)
            if index in self.seen:
                self.seen[index].outputs, self.seen[index].head_names = outputs, head_names
        finally:
            opened.close()
            self._discard(index)

    def _name_heads(self, index: int, opened: KerasArchive) -> tuple[list[str], list[str]]:
        """Return the file's output names and, when the source names heads, one head name per output."""
        outputs = output_names(opened)
        namer = self.sources[index].name_heads
        if namer is None:
            return outputs, []
        names = list(namer(outputs))
        if len(names) != len(outputs):
            raise ValueError(f"Expected one head name per output of '{self.sources[index].label}', got {names}.")
        return outputs, names

    def _check_head_names(self) -> None:
        """Refuse two heads (of one file or of two files) with the same name (task)."""
        owners: dict[str, list[str]] = {}
        for index in sorted(self.seen):
            seen = self.seen[index]
            for output, name in zip(seen.outputs, seen.head_names, strict=False):
                where = f"'{self.sources[index].label}'" + (f" (output '{output}')" if len(seen.outputs) > 1 else "")
                owners.setdefault(name, []).append(where)
        for index in sorted(self.seen):
            seen = self.seen[index]
            clashes = list(dict.fromkeys(name for name in seen.head_names if len(owners[name]) > 1))
            if clashes and index not in self.errors:
                clashing = "; ".join(f"'{name}' is the task of {' and '.join(owners[name])}" for name in clashes)
                self.errors[index] = (
                    f"Expected each head to get its own task, but {clashing}. Rename one with the import's tasks."
                )

    def _majority(self, feature: TensorRef) -> tuple[int, list[int], bool]:
        """Return the earliest file of the largest group of files with bit-identical backbones, the group, and
        whether another group is as large.

        Files are grouped by the sha256 of their weights, layer by layer, for every layer up to
        the feature layer (lined up with the reference by structure); a tie between groups
        goes to the group holding the earliest file. The groups, and so the choice, do not
        depend on which file is the reference.
        """
        backbone = sorted(self.reference.graph.ancestors(feature[0]))
        groups: dict[Any, list[int]] = {}
        for index in sorted(i for i in self.seen if i not in self.errors):
            hashes = self.seen[index].node_hashes
            fingerprint = tuple(hashes.get(node) for node in backbone)
            key = ("unique", index) if None in fingerprint else fingerprint
            groups.setdefault(key, []).append(index)
        best = min(groups.values(), key=lambda members: (-len(members), members[0]))
        tied = sum(1 for members in groups.values() if len(members) == len(best)) > 1
        return best[0], best, tied

    def _named_feature(self, graph: FlatGraph) -> TensorRef:
        """Resolve the requested feature layer in the reference; raise unless it cuts the model."""
        feature = graph.resolve(self.feature_layer)
        problem = cut_error(graph, feature)
        if problem:
            raise HeadExtractionError(_cut_message(self.feature_layer, graph.name, problem))
        return feature

    def _analyse_candidate(self, index: int, opened: KerasArchive) -> None:
        reference_feature = self.seen[self.reference_index].feature
        stop_at = reference_feature[0] if reference_feature is not None else None
        alignment = align(self.reference, opened, stop_at=stop_at)
        seen = SeenFile(opened.graph, alignment)
        self.seen[index] = seen
        if self.branches:
            seen.node_hashes = {
                ref_index: _state_hash(opened.layer_state(opened.graph.nodes[cand_index].layer_key))
                for ref_index, cand_index in alignment.nodes.items()
            }
        if reference_feature is None:
            return
        label = f"'{self.sources[index].label}'"
        try:
            if self.branches:
                _require_same_structure(alignment, self.reference.graph, reference_feature, label=label)
            else:
                require_identical_backbone(alignment, self.reference.graph, reference_feature, label=label)
        except BackboneMismatchError as error:
            self.errors[index] = str(error)
            return
        feature = map_ref(alignment, reference_feature)
        try:
            named = opened.graph.resolve(self.feature_layer)
        except LayerNotFoundError:
            named = feature  # e.g. the nested model's name in a flattened model: use the aligned tensor
        if named != feature:
            self.errors[index] = (
                f"Expected feature layer '{self.feature_layer}' in {label} to be the same tensor as in "
                f"'{self.sources[self.reference_index].label}', but it sits elsewhere in the graph. Pass the "
                "layer's path (e.g. 'base/pool'), or omit feature_layer."
            )
            return
        problem = cut_error(opened.graph, feature)
        if problem:
            self.errors[index] = _cut_message(self.feature_layer, label, problem)
            return
        seen.feature = feature

    # -- choose the feature tensor
    def _choose_feature(self) -> tuple[TensorRef, str]:
        ref_seen = self.seen[self.reference_index]
        ref_graph = ref_seen.graph
        if ref_seen.feature is not None:
            node = ref_graph.nodes[ref_seen.feature[0]]
            return ref_seen.feature, (
                f"Named by the request: '{self.feature_layer}' (layer '{node.path}', {node.class_name})."
            )
        candidates = {i: s for i, s in self.seen.items() if i != self.reference_index and i not in self.errors}
        if self.branches:
            return self._choose_branched_feature(candidates)
        shared = {node.index for node in ref_graph.nodes}
        for seen in candidates.values():
            shared &= seen.alignment.identical
        total_params = self._params(set(range(len(ref_graph.nodes))))
        chosen = None
        for ref in feature_candidates(ref_graph, shared):
            if cut_error(ref_graph, ref):
                continue
            if all(cut_error(s.graph, map_ref(s.alignment, ref)) is None for s in candidates.values()):
                chosen = ref
                break
        fraction = self._params(ref_graph.ancestors(chosen[0])) / total_params if chosen and total_params else 0.0
        if chosen is None or fraction < self.min_shared_fraction:
            self._blame_outliers(candidates, total_params)
            if not self.errors:
                self.errors[self.reference_index] = (
                    "Expected the models to share a backbone, but no single layer splits every model into "
                    "a shared backbone and a head. Pass feature_layer."
                )
            raise self._failure()
        for seen in candidates.values():
            seen.feature = map_ref(seen.alignment, chosen)
        seen_ref = self.seen[self.reference_index]
        seen_ref.feature = chosen
        node = ref_graph.nodes[chosen[0]]
        after = self._first_unshared(candidates)
        reason = (
            f"Chosen automatically: '{node.path}' ({node.class_name}) is the deepest layer at which all "
            f"{len(self.sources)} models compute the same thing with bit-identical weights; the backbone up "
            f"to it holds {fraction:.1%} of the reference model's parameters."
        )
        if after:
            reason += f" After it, {after}."
        return chosen, reason

    # -- with branches: the feature layer, then each model's branch point
    def _no_shared_trunk(self, index: int, seen: SeenFile) -> str:
        """Why model ``index`` has no branch point below its first difference from the reference."""
        expected = (
            f"Expected '{self.sources[index].label}' to share some bottom part of the backbone with "
            f"'{self.sources[self.reference_index].label}' bit for bit, but {seen.alignment.first_difference}"
        )
        node_index = seen.alignment.first_node
        node = None if node_index is None else self.reference.graph.nodes[node_index]
        if node is not None and not node.is_input and self.reference.stores_sublayers(node):
            return (
                f"{expected}. '{node.path}' ({node.class_name}) is stored as one layer: its file keeps its "
                "constructor arguments, not its layer graph (as keras-hub models do), so ModelHub cannot branch "
                "inside it. Import this model separately, or fine-tune it in ModelHub with output 'backbone'."
            )
        return f"{expected}. It was not fine-tuned from the same backbone: import it separately."

    def _cuts_everywhere(self, ref: TensorRef, candidates: dict[int, SeenFile]) -> bool:
        if cut_error(self.reference.graph, ref):
            return False
        for seen in candidates.values():
            if ref[0] not in seen.alignment.nodes or cut_error(seen.graph, map_ref(seen.alignment, ref)):
                return False
        return True

    def _choose_branched_feature(self, candidates: dict[int, SeenFile]) -> tuple[TensorRef, str]:
        """The feature layer when models may own the top of the backbone.

        Heads differ between tasks; backbones have the same structure but may differ in
        weights above some point, so weights alone cannot tell a branch from a head. In
        order: the output of the deepest sub-model every model nests in the same place (the
        backbone, as the Keras transfer-learning guide builds it); else the deepest layer
        every model has in the same place, provided two models are bit-identical up to it
        (plain heads confirm where the backbone ends); else the caller must name it.
        """
        ref_graph = self.reference.graph
        structural = {node.index for node in ref_graph.nodes}
        for seen in candidates.values():
            structural &= set(seen.alignment.nodes)
        for name, refs in sorted(ref_graph.aliases.items(), key=lambda item: -max(r[0] for r in item[1])):
            if len(refs) == 1 and refs[0][0] in structural and self._cuts_everywhere(refs[0], candidates):
                return self._set_feature(refs[0], candidates), (
                    f"Chosen automatically: the output of the nested model '{name}', which every model calls in "
                    "the same place."
                )
        deepest = next(
            (ref for ref in feature_candidates(ref_graph, structural) if self._cuts_everywhere(ref, candidates)),
            None,
        )
        if deepest is not None:
            needed = sorted(ref_graph.ancestors(deepest[0]))
            twins = self._twins(needed, [self.reference_index, *candidates])
            if twins:
                return self._set_feature(deepest, candidates), (
                    f"Chosen automatically: '{ref_graph.nodes[deepest[0]].path}' is the deepest layer every model "
                    f"has in the same place, and '{self.sources[twins[1]].label}' is bit-identical to "
                    f"'{self.sources[twins[0]].label}' up to it."
                )
        self.errors[self.reference_index] = (
            "Expected the models to nest their backbone as a sub-model, or two of them to share the whole "
            "backbone bit for bit, to tell the backbone's top from the heads; found neither. Pass feature_layer "
            "(the last backbone layer)."
        )
        raise self._failure()

    def _twins(self, needed: list[int], indices: list[int]) -> tuple[int, int] | None:
        """Return the earliest two files (by position) whose weights are bit-identical on ``needed``."""
        first_of: dict[tuple, int] = {}
        for index in sorted(indices):
            fingerprint = tuple(self.seen[index].node_hashes.get(node) for node in needed)
            if None in fingerprint:
                continue
            if fingerprint in first_of:
                return first_of[fingerprint], index
            first_of[fingerprint] = index
        return None

    def _set_feature(self, ref: TensorRef, candidates: dict[int, SeenFile]) -> TensorRef:
        for seen in candidates.values():
            seen.feature = map_ref(seen.alignment, ref)
        self.seen[self.reference_index].feature = ref
        return ref

    def _plan_branches(self, feature: TensorRef) -> str:
        """Give each model its branch point; refuse when the shared trunk is too small."""
        ref_graph = self.reference.graph
        candidates = {i: s for i, s in self.seen.items() if i != self.reference_index and i not in self.errors}
        backbone_nodes = ref_graph.ancestors(feature[0])
        points = [
            ref
            for ref in feature_candidates(ref_graph, backbone_nodes - {feature[0]})
            if not ref_graph.nodes[ref[0]].is_input and self._cuts_everywhere(ref, candidates)
        ]  # deepest first
        self.seen[self.reference_index].point = feature
        total = self._params(backbone_nodes)
        for index, seen in candidates.items():
            identical = seen.alignment.identical
            if backbone_nodes <= identical:
                seen.point = feature
                continue
            seen.point = next((ref for ref in points if ref_graph.ancestors(ref[0]) <= identical), None)
            if seen.point is None:
                self.errors[index] = self._no_shared_trunk(index, seen)
        if self.errors:
            raise self._failure()
        trunk = min((seen.point for seen in self.seen.values()), key=lambda ref: ref[0])
        fraction = self._params(ref_graph.ancestors(trunk[0])) / total if total else 1.0
        for index, seen in self.seen.items():
            own = self._params(ref_graph.ancestors(seen.point[0])) / total if total else 1.0
            if own < self.min_shared_fraction:
                self.errors[index] = (
                    f"Expected '{self.sources[index].label}' to share at least {self.min_shared_fraction:.0%} of the "
                    f"backbone's parameters with '{self.sources[self.reference_index].label}' bit for bit; it shares "
                    f"{own:.1%} (up to '{ref_graph.nodes[seen.point[0]].path}'). A trunk that small means the models "
                    "were not fine-tuned from one backbone. Remove it, import it separately, or lower "
                    "min_shared_fraction."
                )
        if self.errors:
            raise self._failure()
        node = ref_graph.nodes[trunk[0]]
        self.backbone_names = submodel_layer_names(ref_graph, feature)
        self.trunk = {
            "after_layer": self.backbone_names.get(trunk[0], node.path),
            "params": self._params(ref_graph.ancestors(trunk[0])),
            "fraction": fraction,
        }
        branched = sum(1 for seen in self.seen.values() if seen.point != feature)
        if trunk == feature:
            return "Every model shares the whole backbone bit for bit: no branches."
        return (
            f"The trunk every model shares bit for bit runs up to '{node.path}' ({fraction:.1%} of the backbone's "
            f"parameters); {branched} of {len(self.sources)} models own the layers above their own branch point."
        )

    def _first_unshared(self, candidates: dict[int, SeenFile]) -> str:
        for seen in candidates.values():
            if seen.alignment.first_difference:
                return seen.alignment.first_difference
        return ""

    def _params(self, nodes: set[int], *, nbytes: bool = False) -> int:
        keys = {
            node.layer_key
            for node in (self.reference.graph.nodes[i] for i in nodes)
            if node.layer_key and not node.layer_key.startswith(OPERATION_KEY_PREFIX)
        }
        return sum(
            int(array.nbytes if nbytes else np.prod(array.shape))
            for key in keys
            for name, array in self.reference.layer_state(key)
            if not name.startswith("assets/")
        )

    def _blame_outliers(self, candidates: dict[int, SeenFile], total_params: int) -> None:
        for index, seen in candidates.items():
            best = 0.0
            for ref in feature_candidates(self.reference.graph, seen.alignment.identical):
                if (
                    cut_error(self.reference.graph, ref) is None
                    and cut_error(seen.graph, map_ref(seen.alignment, ref)) is None
                ):
                    best = self._params(self.reference.graph.ancestors(ref[0])) / max(total_params, 1)
                    break
            if best < self.min_shared_fraction:
                self.errors[index] = (
                    f"Expected '{self.sources[index].label}' to share at least {self.min_shared_fraction:.0%} of "
                    f"the backbone's parameters with '{self.sources[self.reference_index].label}' bit for bit; it "
                    f"shares {best:.1%}: {seen.alignment.first_difference or 'its graph differs'}. Remove it, "
                    "import it with its own backbone, or (if it fine-tuned the top of this backbone) import with "
                    "branches on."
                )

    def _failure(self) -> FamilySplitError:
        names = ", ".join(self.sources[i].label for i in sorted(self.errors))
        return FamilySplitError(
            f"{len(self.errors)} of {len(self.sources)} files cannot be split ({names}).", dict(self.errors)
        )


def _state_hash(state: list[tuple[str, np.ndarray]]) -> bytes:
    """Return the sha256 of one layer's stored weights and assets (names, dtypes, shapes, bytes)."""
    digest = hashlib.sha256()
    for name, array in state:
        digest.update(f"{name}|{array.dtype.str}|{list(array.shape)}|".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.digest()


def _require_same_structure(alignment: Alignment, graph: FlatGraph, feature, *, label: str) -> None:
    """With branches, a model's backbone may differ in weights but not in structure."""
    missing = graph.ancestors(feature[0]) - set(alignment.nodes)
    if missing:
        raise BackboneMismatchError(
            f"Expected {label} to have the reference's backbone (the same layers, wired the same way; weights may "
            f"differ above a branch point), but {alignment.first_difference or 'its graph differs'}. Import it "
            "separately."
        )


def _cut_message(feature_layer: str, where: str, problem: str) -> str:
    return (
        f"Expected '{feature_layer}' to split {where} into backbone and head, but {problem}. Pick a layer "
        "after which only the head runs (often the pooling layer), or omit feature_layer."
    )
