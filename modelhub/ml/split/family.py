"""Split full models into one shared backbone and standalone heads, one file at a time.

Users arrive with many full models that share a backbone and differ in their heads.
They save them in different shapes (the backbone nested as a sub-model, or its layers
called directly) and rarely know the name of the layer where the backbone ends. This
module reads every file as a flat graph (:mod:`modelhub.ml.keras_file`), lines each one
up with a reference by structure, compares weights straight from the weights file,
finds the feature tensor (named, or the deepest one every model shares bit for bit),
and deserialises only the backbone once and each small head. Only one model is open
at a time beside the reference, so K models of any size import in bounded memory.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelhub.ml.branches import BRANCH_INPUT_NAME, BranchInfo, trunk_until
from modelhub.ml.errors import FamilySplitError, HeadExtractionError, MLError
from modelhub.ml.keras_file.align import map_ref
from modelhub.ml.keras_file.graph import TensorRef
from modelhub.ml.keras_file.submodel import build_submodel
from modelhub.ml.probes import check_close, probe_inputs_for
from modelhub.ml.safe_load import load_keras_model
from modelhub.ml.split.plan import DEFAULT_MIN_SHARED_FRACTION, FamilyPlanner, SeenFile
from modelhub.ml.split.single import cut_head


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


class _Splitter(FamilyPlanner):
    """Both passes: plan (:class:`FamilyPlanner`), then build the backbone once and each head and branch."""

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

    # -- pass 2: build the backbone once and each head (and branch)
    def _extract(self, feature: TensorRef, reason: str) -> FamilySplit:
        reference = self.reference
        backbone = build_submodel(reference, feature, name=self.backbone_name)
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
                head = cut_head(opened, seen.feature, name=source.head_name, label=source.label)
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

    def _build_branch(self, opened, seen: SeenFile, feature, backbone_names: dict[int, str], source: ModelSource):
        graph = self.reference.graph
        start = seen.point if seen.alignment is None else map_ref(seen.alignment, seen.point)
        model = build_submodel(
            opened, seen.feature, start=start, start_name=BRANCH_INPUT_NAME, name=f"{source.head_name}_branch"
        )
        owned = sorted(graph.ancestors(feature[0]) - graph.ancestors(seen.point[0]))
        info = BranchInfo(
            after_layer=backbone_names[seen.point[0]],
            layers=[backbone_names[i] for i in owned if i in backbone_names],
            params=int(model.count_params()),
        )
        return model, info

    def _sharing(self, seen: SeenFile, branch, head, backbone_bytes: int) -> dict:
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


def _verify_branched(path: Path, trunk, branch, head, *, label: str) -> dict[str, float]:
    """Check a branched model numerically: full(x) == head(branch(trunk(x))).

    ``trunk`` is the stored backbone up to the branch's point (:func:`trunk_until`).
    """
    model, _ = branch
    full = load_keras_model(path)
    probe = probe_inputs_for(full)
    expected = np.asarray(full(probe, training=False), dtype=np.float64)
    del full
    got = np.asarray(head(model(trunk(probe, training=False), training=False), training=False), dtype=np.float64)
    return check_close(expected, got, what=f"'{label}' cut into trunk, branch and head", error=HeadExtractionError)


def _verify_reference(path: Path, backbone, head) -> dict[str, float]:
    """Check the cut numerically on the reference: full(x) == head(backbone(x))."""
    full = load_keras_model(path)
    probe = probe_inputs_for(full)
    expected = np.asarray(full(probe, training=False), dtype=np.float64)
    got = np.asarray(head(backbone(probe, training=False), training=False), dtype=np.float64)
    return check_close(expected, got, what=f"the head cut from '{full.name}'", error=HeadExtractionError)
