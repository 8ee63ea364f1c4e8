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
from modelhub.ml.split.single import cut_heads


@dataclass
class ModelSource:
    """One full model of a family.

    Attributes:
        label: how to name the file in messages (its file name).
        fetch: ``fetch(directory) -> Path`` writes the file into ``directory`` and
            returns its path; called up to four times per file (twice more when, with
            branches, the first file is not in the largest group of identical backbones).
        head_name: the name of the head model cut from it (``<head_name>_<output>`` for
            each head of a model with several outputs).
        name_heads: optional ``name_heads(output_names) -> head names``, one per output,
            called when the file is first read; raise ``ValueError`` with a message to
            refuse the file. Head names must be unique across the family (they are tasks).
    """

    label: str
    fetch: Callable[[Path], Path]
    head_name: str = "head"
    name_heads: Callable[[list[str]], list[str]] | None = None


@dataclass
class FamilySplit:
    """The outcome of :func:`split_family`.

    Attributes:
        backbone: the shared backbone (a Keras model ending at the feature tensor).
        feature_layer: the feature layer's path in the reference model.
        reason: why that layer (chosen or named).
        reports: one dict per file: ``feature_layer``, ``outputs`` (one name per model
            output) and ``heads``: ``[{"output", "head_layers", "head_params"}]``.
        verification: max abs / relative diff of the reference's full model vs
            head(backbone(x)), output by output (and, with branches, the largest over the
            branched models; with several outputs, the largest over the files with several).
        trunk: with branches, ``{"after_layer", "params", "fraction"}``: the deepest layer
            every model shares bit for bit and the share of the backbone's parameters below it.
        reference: the file whose backbone is stored: ``{"file", "position",
            "files_sharing", "num_files", "reason"}``.
    """

    backbone: Any
    feature_layer: str
    reason: str
    reports: list[dict[str, Any]]
    verification: dict[str, float] = field(default_factory=dict)
    trunk: dict[str, Any] | None = None
    reference: dict[str, Any] | None = None


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
        on_head: called as ``on_head(index, heads, branch)`` for each file, in order, once
            every file has been checked; ``heads`` is ``[(output name, head model)]``, one
            per model output (a model with several outputs gives several heads, each from
            the feature tensor to its output; layers they share after it are copied into
            each); ``branch`` is None or ``(branch_model, BranchInfo)`` (see
            :mod:`modelhub.ml.branches`), shared by the file's heads.
        check_file: safety check run on each file before it is read (raises MLError).
        min_shared_fraction: when choosing the layer, the least fraction of the
            reference's parameters the shared backbone must hold; with ``branches``, the
            least fraction of the backbone's parameters the trunk every model shares must hold.
        backbone_name: the backbone model's name.
        branches: let models differ in the top of the backbone. The stored backbone is the
            version most files share bit for bit up to the feature layer (a tie goes to the
            earliest file; the order of the files changes nothing else); each model whose
            layers above some branch point differ from it keeps them as a branch (cut at the
            deepest point up to which it is bit-identical). Off: any difference fails.

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
            feature, reason = self._pass_one()
            if self.branches:
                winner, group, tied = self._majority(feature)
                if winner != self.reference_index:
                    self._restart(winner)  # line every file up with the majority's backbone instead
                    feature, reason = self._pass_one()
                    winner, group, tied = self._majority(feature)
                self._note_reference(self.reference_index, group, tied=tied)
                reason += " " + self._plan_branches(feature)
            else:
                self._note_reference(self.reference_index, sorted(self.seen))
            return self._extract(feature, reason)
        finally:
            if self.reference is not None:
                self.reference.close()

    def _pass_one(self) -> tuple[TensorRef, str]:
        for index in self.order:
            self._analyse(index)
        if self.reference is None:
            raise self._failure()
        self._check_head_names()
        if self.errors:
            raise self._failure()
        feature, reason = self._choose_feature()
        if self.errors:
            raise self._failure()
        return feature, reason

    def _note_reference(self, index: int, group: list[int], *, tied: bool = False) -> None:
        num_files = len(self.sources)
        label = self.sources[index].label
        if not self.branches:
            why = f"all {num_files} files share this backbone bit for bit up to the feature layer"
        elif len(group) == 1 and num_files > 1:
            why = (
                f"no two files share a backbone bit for bit up to the feature layer, so the earliest file's is "
                f"stored; the {num_files - 1} others keep what differs as branches"
            )
        else:
            why = f"{len(group)} of {num_files} files share this backbone bit for bit up to the feature layer"
            if tied:
                why += " (as many as share another one: the tie goes to the group with the earliest file)"
        self.reference_choice = {
            "file": label,
            "position": index,
            "files_sharing": len(group),
            "num_files": num_files,
            "reason": f"Stored the backbone of '{label}': {why}.",
        }

    # -- pass 2: build the backbone once and each head (and branch)
    def _extract(self, feature: TensorRef, reason: str) -> FamilySplit:
        reference = self.reference
        backbone = build_submodel(reference, feature, name=self.backbone_name)
        backbone_names = self.backbone_names
        backbone_bytes = self._params(reference.graph.ancestors(feature[0]), nbytes=True) if self.branches else 0
        ref_node = reference.graph.nodes[feature[0]]
        reports: list[dict[str, Any]] = []
        worst: dict[str, float] = {}
        worst_multi: dict[str, float] = {}
        verification: dict[str, Any] = {}
        trunks: dict[str, Any] = {}  # branch point -> the backbone up to it, built once
        for index, source in enumerate(self.sources):
            seen = self.seen[index]
            opened = reference if index == self.reference_index else self._open(index)
            branch = None
            try:
                heads = cut_heads(opened, seen.feature, name=source.head_name, label=source.label)
                if self.branches and seen.point != feature:
                    branch = self._build_branch(opened, seen, feature, backbone_names, source)
                    after = branch[1].after_layer
                    if after not in trunks:
                        trunks[after] = trunk_until(backbone, after)
                    features = _chain(trunks[after], branch[0])
                    what = f"'{source.label}' cut into trunk, branch and head"
                    figures = _verify_file(opened.path, features, heads, label=what)
                    if figures["max_rel_diff"] >= worst.get("max_rel_diff", -1.0):
                        worst = figures
                elif index == self.reference_index:
                    what = f"the head cut from '{source.label}'"
                    verification = _verify_file(opened.path, backbone, heads, label=what)
                elif len(heads) > 1:
                    figures = _verify_file(opened.path, backbone, heads, label=f"the heads cut from '{source.label}'")
                    if figures["max_rel_diff"] >= worst_multi.get("max_rel_diff", -1.0):
                        worst_multi = figures
            except MLError as error:
                self.errors[index] = str(error)
                heads = None
            finally:
                if opened is not reference:
                    opened.close()
                    self._discard(index)
            if heads is None:
                continue
            node = seen.graph.nodes[seen.feature[0]]
            report = {
                "feature_layer": node.path,
                "outputs": [output for output, _ in heads],
                "heads": [
                    {
                        "output": output,
                        "head_layers": [layer.name for layer in head.layers[1:]],
                        "head_params": int(head.count_params()),
                    }
                    for output, head in heads
                ],
            }
            if self.branches:
                report.update(self._sharing(seen, branch, [head for _, head in heads], backbone_bytes))
            reports.append(report)
            if self.errors:
                continue
            self.on_head(index, heads, branch)
        if self.errors:
            raise self._failure()
        if worst:
            verification["branched_max_abs_diff"] = worst["max_abs_diff"]
            verification["branched_max_rel_diff"] = worst["max_rel_diff"]
        if worst_multi:
            verification["multi_output_max_abs_diff"] = worst_multi["max_abs_diff"]
            verification["multi_output_max_rel_diff"] = worst_multi["max_rel_diff"]
        return FamilySplit(
            backbone, ref_node.path, reason, reports, verification, self.trunk, reference=self.reference_choice
        )

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

    def _sharing(self, seen: SeenFile, branch, heads: list, backbone_bytes: int) -> dict:
        graph = self.reference.graph
        head_bytes = sum(int(np.asarray(w).nbytes) for head in heads for w in head.get_weights())
        if branch is None:
            return {"branch": None, "shared_bytes": backbone_bytes, "owned_bytes": head_bytes}
        model, info = branch
        return {
            "branch": info.as_dict(),
            "shared_bytes": self._params(graph.ancestors(seen.point[0]), nbytes=True),
            "owned_bytes": head_bytes + sum(int(np.asarray(w).nbytes) for w in model.get_weights()),
        }


def _chain(trunk, branch):
    """Return ``x -> branch(trunk(x))`` (a branched model's features)."""

    def features(inputs, training=False):
        return branch(trunk(inputs, training=training), training=training)

    return features


def _verify_file(path: Path, features, heads: list[tuple[str, Any]], *, label: str) -> dict[str, Any]:
    """Check a cut numerically, output by output: full(x)[output] == head(features(x)).

    Returns:
        The worst figures of :func:`check_close` over the outputs; with several outputs,
        also ``outputs``: ``{output name: {"max_abs_diff", "max_rel_diff"}}``.
    """
    full = load_keras_model(path)
    probe = probe_inputs_for(full)
    expected = _outputs_by_name(full(probe, training=False), [output for output, _ in heads])
    del full
    got_features = features(probe, training=False)
    worst: dict[str, Any] = {}
    per_output: dict[str, dict[str, float]] = {}
    for output, head in heads:
        what = label if len(heads) == 1 else f"{label} for output '{output}'"
        got = np.asarray(head(got_features, training=False), dtype=np.float64)
        figures = check_close(expected[output], got, what=what, error=HeadExtractionError)
        per_output[output] = {"max_abs_diff": figures["max_abs_diff"], "max_rel_diff": figures["max_rel_diff"]}
        if figures["max_rel_diff"] >= worst.get("max_rel_diff", -1.0):
            worst = dict(figures)
    if len(heads) > 1:
        worst["outputs"] = per_output
    return worst


def _outputs_by_name(result: Any, names: list[str]) -> dict[str, np.ndarray]:
    """Return a full model's outputs keyed by the names of :func:`modelhub.ml.split.single.output_names`."""
    if len(names) == 1 and not isinstance(result, (dict, list, tuple)):
        return {names[0]: np.asarray(result, dtype=np.float64)}
    if isinstance(result, dict):
        flat: dict[str, Any] = {}

        def walk(value: Any, prefix: str) -> None:
            if isinstance(value, dict):
                for key, item in value.items():
                    walk(item, f"{prefix}{key}-")
            else:
                flat[prefix[:-1]] = value

        walk(result, "")
        values = [flat[name] for name in names] if set(names) <= set(flat) else list(flat.values())
    else:
        values = list(result) if isinstance(result, (list, tuple)) else [result]
    if len(values) != len(names):
        raise HeadExtractionError(f"Expected the model to return {len(names)} outputs ({names}), got {len(values)}.")
    return {name: np.asarray(value, dtype=np.float64) for name, value in zip(names, values, strict=True)}
