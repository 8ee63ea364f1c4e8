"""Split full models into one shared backbone and standalone heads, one file at a time.

Users arrive with many full models that share a backbone and differ in their heads.
They save them in different shapes (the backbone nested as a sub-model, or its layers
called directly) and rarely know the name of the layer where the backbone ends. This
module reads every file as a flat graph (:mod:`modelhub.ml.archive`), lines each one
up with a reference by structure, compares weights straight from the weights file,
finds the feature tensor (named, or the deepest one every model shares bit for bit),
and deserialises only the backbone once and each small head. Only one model is open
at a time beside the reference, so K models of any size import in bounded memory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelhub.ml import archive as graphs
from modelhub.ml.errors import (
    BackboneMismatchError,
    FeatureShapeMismatchError,
    HeadExtractionError,
    LayerNotFoundError,
    MLError,
)

HEAD_INPUT_NAME = "features"
DEFAULT_MIN_SHARED_FRACTION = 0.5
VERIFY_RTOL = 1e-5


class FamilySplitError(MLError):
    """Some files of a family cannot be split; ``errors`` maps file index -> message."""

    def __init__(self, message: str, errors: dict[int, str]) -> None:
        super().__init__(message)
        self.errors = errors


@dataclass
class ModelSource:
    """One full model of a family.

    Attributes:
        label: how to name the file in messages (its file name).
        fetch: ``fetch(directory) -> Path`` writes the file into ``directory`` and
            returns its path; called once or twice per file.
        head_name: the name of the head model cut from it.
    """

    label: str
    fetch: Callable[[Path], Path]
    head_name: str = "head"


@dataclass
class FamilySplit:
    """The outcome of :func:`split_family`.

    Attributes:
        backbone: the shared backbone (a Keras model ending at the feature tensor).
        feature_layer: the feature layer's path in the reference model.
        reason: why that layer (chosen or named).
        reports: one dict per file: ``feature_layer``, ``head_layers``, ``head_params``.
        verification: max abs / relative diff of the reference's full model vs
            head(backbone(x)) (and, with branches, the largest over the branched models).
        trunk: with branches, ``{"after_layer", "params", "fraction"}``: the deepest layer
            every model shares bit for bit and the share of the backbone's parameters below it.
    """

    backbone: Any
    feature_layer: str
    reason: str
    reports: list[dict[str, Any]]
    verification: dict[str, float] = field(default_factory=dict)
    trunk: dict[str, Any] | None = None


def split_family(
    sources: Sequence[ModelSource],
    *,
    feature_layer: str | None,
    on_head: Callable[[int, Any, Any], None],
    check_file: Callable[[Path], None],
    min_shared_fraction: float = DEFAULT_MIN_SHARED_FRACTION,
    backbone_name: str = "backbone",
    branches: bool = False,
) -> FamilySplit:
    """Split K full models into one backbone and K heads, streaming.

    Args:
        sources: the K full models.
        feature_layer: the layer whose output is the feature tensor (top level, inside a
            nested model at any depth, or a nested model's name); None to choose the
            deepest layer at which every model computes the same thing with
            bit-identical weights (needs K >= 2).
        on_head: called as ``on_head(index, head_model, branch)`` for each head, in order,
            once every file has been checked; ``branch`` is None or ``(branch_model,
            BranchInfo)`` (see :mod:`modelhub.ml.branches`).
        check_file: safety check run on each file before it is read (raises MLError).
        min_shared_fraction: when choosing the layer, the least fraction of the
            reference's parameters the shared backbone must hold; with ``branches``, the
            least fraction of the backbone's parameters the trunk every model shares must hold.
        backbone_name: the backbone model's name.
        branches: let models differ from the reference in the top of the backbone. The
            backbone is the reference's, up to the feature layer; each model whose layers
            above some branch point differ keeps them as a branch (cut at the deepest point
            up to which it is bit-identical to the reference). Off: any difference fails.

    Returns:
        A :class:`FamilySplit`.

    Raises:
        FamilySplitError: one or more files cannot be split; nothing is passed to
            ``on_head`` in that case.

    Example:
        >>> split = split_family(sources, feature_layer=None, on_head=save, check_file=check)
        >>> split.feature_layer
        'mobilenetv2_1.00_96/global_average_pooling2d'
    """
    if feature_layer is None and len(sources) < 2:
        raise FamilySplitError(
            "Expected feature_layer with a single model: with one file there is nothing to compare. "
            "Name the last backbone layer.",
            {0: "feature_layer is required for a single model"},
        )
    with tempfile.TemporaryDirectory(prefix="modelhub-split-") as tmp:
        work = Path(tmp)
        return _Splitter(
            sources, feature_layer, on_head, check_file, min_shared_fraction, backbone_name, work, branches
        ).run()


@dataclass
class _Seen:
    graph: graphs.FlatGraph
    alignment: graphs.Alignment | None  # None for the reference
    feature: graphs.TensorRef | None = None
    point: graphs.TensorRef | None = None  # with branches: the reference tensor it branches after


class _Splitter:
    def __init__(self, sources, feature_layer, on_head, check_file, min_shared_fraction, backbone_name, work, branches):
        self.sources = list(sources)
        self.feature_layer = feature_layer
        self.on_head = on_head
        self.check_file = check_file
        self.min_shared_fraction = min_shared_fraction
        self.backbone_name = backbone_name
        self.work = work
        self.errors: dict[int, str] = {}
        self.seen: dict[int, _Seen] = {}
        self.reference: graphs.KerasArchive | None = None
        self.reference_index: int | None = None
        self.branches = branches
        self.trunk: dict[str, Any] | None = None
        self.backbone_names: dict[int, str] = {}

    # -- pass 1: check every file against the reference, one at a time
    def run(self) -> FamilySplit:
        try:
            for index in range(len(self.sources)):
                self._analyse(index)
            if self.reference is None:
                raise self._failure()
            feature, reason = self._choose_feature()
            if self.errors:
                raise self._failure()
            if self.branches:
                reason += " " + self._plan_branches(feature)
            return self._extract(feature, reason)
        finally:
            if self.reference is not None:
                self.reference.close()

    def _open(self, index: int) -> graphs.KerasArchive:
        folder = self.work / f"file-{index}"
        folder.mkdir(exist_ok=True)
        path = self.sources[index].fetch(folder)
        self.check_file(path)
        opened = graphs.KerasArchive(path)
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
        if self.reference is None:
            try:
                feature = self._named_feature(opened.graph) if self.feature_layer is not None else None
            except MLError as error:
                self.errors[index] = str(error)
                opened.close()
                self._discard(index)
                return
            self.seen[index] = _Seen(opened.graph, None, feature)
            self.reference = opened
            self.reference_index = index
            # Files seen before the reference failed on their own; nothing to align them with.
            return
        try:
            self._analyse_candidate(index, opened)
        finally:
            opened.close()
            self._discard(index)

    def _named_feature(self, graph: graphs.FlatGraph) -> graphs.TensorRef:
        """Resolve the requested feature layer in the reference; raise unless it cuts the model."""
        feature = graph.resolve(self.feature_layer)
        problem = graphs.cut_error(graph, feature)
        if problem:
            raise HeadExtractionError(_cut_message(self.feature_layer, graph.name, problem))
        return feature

    def _analyse_candidate(self, index: int, opened: graphs.KerasArchive) -> None:
        reference_feature = self.seen[self.reference_index].feature
        stop_at = reference_feature[0] if reference_feature is not None else None
        alignment = graphs.align(self.reference, opened, stop_at=stop_at)
        seen = _Seen(opened.graph, alignment)
        self.seen[index] = seen
        if reference_feature is None:
            return
        label = f"'{self.sources[index].label}'"
        try:
            if self.branches:
                _require_same_structure(alignment, self.reference.graph, reference_feature, label=label)
            else:
                graphs.require_identical_backbone(alignment, self.reference.graph, reference_feature, label=label)
        except BackboneMismatchError as error:
            self.errors[index] = str(error)
            return
        feature = graphs.map_ref(alignment, reference_feature)
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
        problem = graphs.cut_error(opened.graph, feature)
        if problem:
            self.errors[index] = _cut_message(self.feature_layer, label, problem)
            return
        seen.feature = feature

    # -- choose the feature tensor
    def _choose_feature(self) -> tuple[graphs.TensorRef, str]:
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
        for ref in graphs.feature_candidates(ref_graph, shared):
            if graphs.cut_error(ref_graph, ref):
                continue
            if all(graphs.cut_error(s.graph, graphs.map_ref(s.alignment, ref)) is None for s in candidates.values()):
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
            seen.feature = graphs.map_ref(seen.alignment, chosen)
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
    def _no_shared_trunk(self, index: int, seen: _Seen) -> str:
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

    def _cuts_everywhere(self, ref: graphs.TensorRef, candidates: dict[int, _Seen]) -> bool:
        if graphs.cut_error(self.reference.graph, ref):
            return False
        for seen in candidates.values():
            if ref[0] not in seen.alignment.nodes or graphs.cut_error(seen.graph, graphs.map_ref(seen.alignment, ref)):
                return False
        return True

    def _choose_branched_feature(self, candidates: dict[int, _Seen]) -> tuple[graphs.TensorRef, str]:
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
            (ref for ref in graphs.feature_candidates(ref_graph, structural) if self._cuts_everywhere(ref, candidates)),
            None,
        )
        if deepest is not None:
            needed = ref_graph.ancestors(deepest[0])
            twins = [i for i, seen in candidates.items() if needed <= seen.alignment.identical]
            if twins:
                return self._set_feature(deepest, candidates), (
                    f"Chosen automatically: '{ref_graph.nodes[deepest[0]].path}' is the deepest layer every model "
                    f"has in the same place, and '{self.sources[twins[0]].label}' is bit-identical to "
                    f"'{self.sources[self.reference_index].label}' up to it."
                )
        self.errors[self.reference_index] = (
            "Expected the models to nest their backbone as a sub-model, or two of them to share the whole "
            "backbone bit for bit, to tell the backbone's top from the heads; found neither. Pass feature_layer "
            "(the last backbone layer)."
        )
        raise self._failure()

    def _set_feature(self, ref: graphs.TensorRef, candidates: dict[int, _Seen]) -> graphs.TensorRef:
        for seen in candidates.values():
            seen.feature = graphs.map_ref(seen.alignment, ref)
        self.seen[self.reference_index].feature = ref
        return ref

    def _plan_branches(self, feature: graphs.TensorRef) -> str:
        """Give each model its branch point; refuse when the shared trunk is too small."""
        ref_graph = self.reference.graph
        candidates = {i: s for i, s in self.seen.items() if i != self.reference_index and i not in self.errors}
        backbone_nodes = ref_graph.ancestors(feature[0])
        points = [
            ref
            for ref in graphs.feature_candidates(ref_graph, backbone_nodes - {feature[0]})
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
        self.backbone_names = graphs.submodel_layer_names(ref_graph, feature)
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

    def _first_unshared(self, candidates: dict[int, _Seen]) -> str:
        for seen in candidates.values():
            if seen.alignment.first_difference:
                return seen.alignment.first_difference
        return ""

    def _params(self, nodes: set[int], *, nbytes: bool = False) -> int:
        keys = {
            node.layer_key
            for node in (self.reference.graph.nodes[i] for i in nodes)
            if node.layer_key and not node.layer_key.startswith(graphs.OPERATION_KEY_PREFIX)
        }
        return sum(
            int(array.nbytes if nbytes else np.prod(array.shape))
            for key in keys
            for name, array in self.reference.layer_state(key)
            if not name.startswith("assets/")
        )

    def _blame_outliers(self, candidates: dict[int, _Seen], total_params: int) -> None:
        for index, seen in candidates.items():
            best = 0.0
            for ref in graphs.feature_candidates(self.reference.graph, seen.alignment.identical):
                if (
                    graphs.cut_error(self.reference.graph, ref) is None
                    and graphs.cut_error(seen.graph, graphs.map_ref(seen.alignment, ref)) is None
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

    # -- pass 2: build the backbone once and each head (and branch)
    def _extract(self, feature: graphs.TensorRef, reason: str) -> FamilySplit:
        from modelhub.ml.branches import trunk_until

        reference = self.reference
        backbone = graphs.build_submodel(reference, feature, name=self.backbone_name)
        backbone_names = self.backbone_names
        backbone_bytes = self._params(reference.graph.ancestors(feature[0]), nbytes=True) if self.branches else 0
        ref_node = reference.graph.nodes[feature[0]]
        reports: list[dict[str, Any]] = []
        reference_head = None
        worst: dict[str, float] = {}
        trunks: dict[str, Any] = {}  # branch point -> the backbone up to it, built once
        for index, source in enumerate(self.sources):
            seen = self.seen[index]
            if index == self.reference_index:
                opened = reference
            else:
                opened = self._open(index)
            branch = None
            try:
                head = _build_head(opened, seen.feature, name=source.head_name, label=source.label)
                if self.branches and seen.point != feature:
                    branch = self._build_branch(opened, seen, feature, backbone_names, source)
                    after = branch[1].after_layer
                    if after not in trunks:
                        trunks[after] = trunk_until(backbone, after)
                    figures = _verify_branched(opened.path, trunks[after], branch, head, label=source.label)
                    if figures["max_rel_diff"] >= worst.get("max_rel_diff", -1.0):
                        worst = figures
            except MLError as error:
                self.errors[index] = str(error)
                head = None
            finally:
                if opened is not reference:
                    opened.close()
                    self._discard(index)
            if head is None:
                continue
            if index == self.reference_index:
                reference_head = head
            node = seen.graph.nodes[seen.feature[0]]
            report = {
                "feature_layer": node.path,
                "head_layers": [layer.name for layer in head.layers[1:]],
                "head_params": int(head.count_params()),
            }
            if self.branches:
                report.update(self._sharing(seen, branch, head, backbone_bytes))
            reports.append(report)
            if self.errors:
                continue
            self.on_head(index, head, branch)
        if self.errors:
            raise self._failure()
        verification = _verify_reference(reference.path, backbone, reference_head)
        if worst:
            verification["branched_max_abs_diff"] = worst["max_abs_diff"]
            verification["branched_max_rel_diff"] = worst["max_rel_diff"]
        return FamilySplit(backbone, ref_node.path, reason, reports, verification, self.trunk)

    def _build_branch(self, opened, seen: _Seen, feature, backbone_names: dict[int, str], source: ModelSource):
        from modelhub.ml.branches import BRANCH_INPUT_NAME, BranchInfo

        graph = self.reference.graph
        start = seen.point if seen.alignment is None else graphs.map_ref(seen.alignment, seen.point)
        model = graphs.build_submodel(
            opened, seen.feature, start=start, start_name=BRANCH_INPUT_NAME, name=f"{source.head_name}_branch"
        )
        owned = sorted(graph.ancestors(feature[0]) - graph.ancestors(seen.point[0]))
        info = BranchInfo(
            after_layer=backbone_names[seen.point[0]],
            layers=[backbone_names[i] for i in owned if i in backbone_names],
            params=int(model.count_params()),
        )
        return model, info

    def _sharing(self, seen: _Seen, branch, head, backbone_bytes: int) -> dict:
        graph = self.reference.graph
        head_bytes = sum(int(np.asarray(w).nbytes) for w in head.get_weights())
        if branch is None:
            return {"branch": None, "shared_bytes": backbone_bytes, "owned_bytes": head_bytes}
        model, info = branch
        return {
            "branch": info.as_dict(),
            "shared_bytes": self._params(graph.ancestors(seen.point[0]), nbytes=True),
            "owned_bytes": head_bytes + sum(int(np.asarray(w).nbytes) for w in model.get_weights()),
        }


def _require_same_structure(alignment: graphs.Alignment, graph: graphs.FlatGraph, feature, *, label: str) -> None:
    """With branches, a model's backbone may differ in weights but not in structure."""
    missing = graph.ancestors(feature[0]) - set(alignment.nodes)
    if missing:
        raise BackboneMismatchError(
            f"Expected {label} to have the reference's backbone (the same layers, wired the same way; weights may "
            f"differ above a branch point), but {alignment.first_difference or 'its graph differs'}. Import it "
            "separately."
        )


def _verify_branched(path: Path, trunk, branch, head, *, label: str) -> dict[str, float]:
    """Check a branched model numerically: full(x) == head(branch(trunk(x))).

    ``trunk`` is the stored backbone up to the branch's point (:func:`trunk_until`).
    """
    from modelhub.ml.safe_load import load_keras_model

    model, _ = branch
    full = load_keras_model(path)
    probe = probe_inputs_for(full)
    expected = np.asarray(full(probe, training=False), dtype=np.float64)
    del full
    got = np.asarray(head(model(trunk(probe, training=False), training=False), training=False), dtype=np.float64)
    return check_close(expected, got, what=f"'{label}' cut into trunk, branch and head", error=HeadExtractionError)


def _cut_message(feature_layer: str, where: str, problem: str) -> str:
    return (
        f"Expected '{feature_layer}' to split {where} into backbone and head, but {problem}. Pick a layer "
        "after which only the head runs (often the pooling layer), or omit feature_layer."
    )


def _build_head(opened: graphs.KerasArchive, feature: graphs.TensorRef, *, name: str, label: str):
    outputs = opened.graph.outputs
    if len(outputs) != 1:
        raise HeadExtractionError(
            f"Expected '{label}' to have one output (one task), it has {len(outputs)}. Save one model per task."
        )
    return graphs.build_submodel(opened, outputs[0], start=feature, start_name=HEAD_INPUT_NAME, name=name)


def _verify_reference(path: Path, backbone, head) -> dict[str, float]:
    """Check the cut numerically on the reference: full(x) == head(backbone(x))."""
    from modelhub.ml.safe_load import load_keras_model

    full = load_keras_model(path)
    probe = probe_inputs_for(full)
    expected = np.asarray(full(probe, training=False), dtype=np.float64)
    got = np.asarray(head(backbone(probe, training=False), training=False), dtype=np.float64)
    return check_close(expected, got, what=f"the head cut from '{full.name}'", error=HeadExtractionError)


def check_close(expected: np.ndarray, got: np.ndarray, *, what: str, error=HeadExtractionError, rtol=VERIFY_RTOL):
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


def split_full_model(backbone_path: str | os.PathLike[str], full_path: str | os.PathLike[str], *, name: str = "head"):
    """Cut the head out of one full model, given the stored backbone it was built on.

    The backbone may be nested in the full model at any depth, or flattened.

    Args:
        backbone_path: the stored backbone's ``.keras`` file (checked already).
        full_path: the full model's ``.keras`` file (checked already).
        name: the head's name.

    Returns:
        The head, a ``keras.Model`` whose input ``features`` is the backbone's output.

    Raises:
        BackboneMismatchError: the full model's backbone differs (first difference named).
        HeadExtractionError: the head reads more than the feature tensor.
    """
    with graphs.KerasArchive(backbone_path) as backbone, graphs.KerasArchive(full_path) as full:
        full.check_layout()
        if len(backbone.graph.outputs) != 1:
            raise BackboneMismatchError("Expected a backbone with one output.")
        feature = backbone.graph.outputs[0]
        alignment = graphs.align(backbone, full, stop_at=feature[0])
        graphs.require_identical_backbone(alignment, backbone.graph, feature, label=f"model '{full.graph.name}'")
        mapped = graphs.map_ref(alignment, feature)
        problem = graphs.cut_error(full.graph, mapped)
        if problem:
            raise HeadExtractionError(
                f"Expected the head of '{full.graph.name}' to read only the backbone's output, but {problem}."
            )
        return _build_head(full, mapped, name=name, label=full.graph.name)


def ends_at(path: str | os.PathLike[str], feature_layer: str) -> bool:
    """Return whether a model file's single output is ``feature_layer``'s (no cut needed).

    Models that are not functional or sequential at the top level (a keras-hub backbone
    saved alone) answer True when their own name is ``feature_layer``.
    """
    config = graphs.read_config(path)
    if config.get("class_name") not in graphs.INLINED_CLASSES:
        return (config.get("config") or {}).get("name") == feature_layer
    graph = graphs.parse_config(config)
    if len(graph.outputs) != 1:
        return False
    try:
        return graph.resolve(feature_layer) == graph.outputs[0]
    except LayerNotFoundError:
        return False


def backbone_from_file(path: str | os.PathLike[str], feature_layer: str | None, *, name: str | None = None):
    """Return the backbone stored in a file, cut at ``feature_layer`` (any depth) when given.

    Example:
        >>> backbone = backbone_from_file("full.keras", "base/global_average_pooling2d")
    """
    with graphs.KerasArchive(path) as opened:
        opened.check_layout()
        if feature_layer is None:
            if len(opened.graph.outputs) != 1:
                raise LayerNotFoundError(
                    f"Expected a backbone with one output, '{opened.graph.name}' has {len(opened.graph.outputs)}. "
                    "Pass feature_layer."
                )
            feature = opened.graph.outputs[0]
        else:
            feature = opened.graph.resolve(feature_layer)
        return graphs.build_submodel(opened, feature, name=name or opened.graph.name)


def check_head_compatible(head: Any, feature_shape: Sequence[int | None], *, backbone_label: str = "backbone") -> None:
    """Raise unless ``head`` takes exactly one input of ``feature_shape`` (batch excluded).

    Example:
        >>> check_head_compatible(head, [1280], backbone_label="'mobilenet' v2")
    """
    if len(head.inputs) != 1:
        raise FeatureShapeMismatchError(
            f"Expected a head with one input (the features), received {len(head.inputs)} inputs."
        )
    head_shape = [None if d is None else int(d) for d in head.inputs[0].shape[1:]]
    expected = [None if d is None else int(d) for d in feature_shape]
    if head_shape != expected:
        raise FeatureShapeMismatchError(
            f"Head '{head.name}' expects features of shape {head_shape}, {backbone_label} "
            f"outputs {expected}. Train the head on this backbone or pick the backbone "
            "version it was trained on."
        )


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
    from modelhub.ml.inspect import input_name

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
    import keras

    from modelhub.ml.inspect import graph_nodes, input_name

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
    from modelhub.ml.inspect import iter_leaf_layers

    for layer in iter_leaf_layers(model):
        if hasattr(layer, "get_vocabulary"):
            try:
                words = [str(w) for w in layer.get_vocabulary() if isinstance(w, str) and w and not w.startswith("[")]
            except Exception:  # noqa: BLE001 - a layer without a vocabulary yet
                continue
            if words:
                return words
    return []
