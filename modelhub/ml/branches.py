"""Trunk and branches: a backbone cut at layer names, and the branches tasks own above them.

A task that fine-tuned the top of a shared backbone keeps only what it changed: a
*branch*, the backbone's layers from just after a branch point (a backbone layer) up to
the feature layer, with its own weights. Every other layer stays in the one shared
backbone, the *trunk*, which never changes, so no other task can forget.

Everything here works on ``.keras`` files read as flat graphs
(:mod:`modelhub.ml.keras_file`): a branch point must cut the backbone cleanly (nothing above
it reads anything below it but its output), and only the parts asked for are
deserialised, with Keras' safe mode.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelhub.ml.errors import LayerNotFoundError, MLError
from modelhub.ml.freeze import top_weight_layers
from modelhub.ml.inspect import iter_leaf_layers
from modelhub.ml.keras_file.align import cut_error, feature_candidates
from modelhub.ml.keras_file.archive import KerasArchive
from modelhub.ml.keras_file.graph import OPERATION_KEY_PREFIX, FlatGraph, TensorRef
from modelhub.ml.keras_file.submodel import build_submodel, submodel_layer_names
from modelhub.ml.probes import check_close, probe_inputs_for

BRANCH_INPUT_NAME = "trunk"


class BranchError(MLError):
    """A branch point does not cut the backbone, or a branch does not fit its trunk."""


@dataclass(frozen=True)
class BranchInfo:
    """What a head version's branch is, as the API shows it.

    Attributes:
        after_layer: the last shared backbone layer (the branch point).
        layers: the backbone layers the branch owns, in graph order.
        params: the branch's parameter count.
    """

    after_layer: str
    layers: list[str]
    params: int

    def as_dict(self) -> dict[str, Any]:
        return {"after_layer": self.after_layer, "layers": list(self.layers), "params": int(self.params)}


@dataclass
class Trunk:
    """A backbone cut at branch points into consecutive segments.

    Attributes:
        points: the branch points (backbone layer names), in graph order.
        segments: Keras models; ``segments[0]`` takes the backbone's inputs and returns the
            tensor after ``points[0]``; ``segments[j]`` takes that of ``points[j - 1]`` and
            returns that of ``points[j]`` (or the features, for the last one). There are
            ``len(points) + 1`` of them, or ``len(points)`` when the top is left out.
        shapes: the shape (batch excluded) of the tensor after each point.
    """

    points: list[str]
    segments: list[Any]
    shapes: list[list[int | None]]


def cut_points(graph: FlatGraph) -> list[TensorRef]:
    """Return the tensors a backbone graph can branch after, shallowest first.

    A cut point is a layer output that splits the backbone in two: everything above reads
    only it or layers above it (no skip connection jumps over it), and the backbone's single
    output is above it.
    """
    if len(graph.outputs) != 1:
        raise BranchError(
            f"Expected a backbone with one output (the features), '{graph.name}' has {len(graph.outputs)}."
        )
    output = graph.outputs[0]
    inside = graph.ancestors(output[0])
    points = [
        ref
        for ref in feature_candidates(graph, inside - {output[0]})
        if not graph.nodes[ref[0]].is_input and cut_error(graph, ref) is None
    ]
    return sorted(points)


def describe_points(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Return every branch point of a backbone file with what a branch after it would hold.

    Returns:
        ``[{"layer", "class_name", "params_above", "weight_layers_above"}]``, shallowest first:
        the parameters and weight-bearing layers a branch after that layer would own.

    Example:
        >>> describe_points("backbone.keras")[-1]["layer"]
        'Conv_1_bn'
    """
    with KerasArchive(path) as opened:
        graph = opened.graph
        sizes = _layer_sizes(opened)
        output = graph.outputs[0]
        total = graph.ancestors(output[0])
        rows = []
        for ref in cut_points(graph):
            above = total - graph.ancestors(ref[0])
            keys = {graph.nodes[i].layer_key for i in above}
            rows.append(
                {
                    "layer": graph.nodes[ref[0]].path,
                    "class_name": graph.nodes[ref[0]].class_name,
                    "params_above": int(sum(sizes.get(key, 0) for key in keys)),
                    "weight_layers_above": sum(1 for key in keys if sizes.get(key, 0)),
                }
            )
        return rows


def point_ref(graph: FlatGraph, after_layer: str, points: list[TensorRef] | None = None) -> TensorRef:
    """Return the tensor after backbone layer ``after_layer``; raise unless it is a branch point.

    ``points`` is ``cut_points(graph)`` when the caller has it already.
    """
    try:
        ref = graph.resolve(after_layer)
    except LayerNotFoundError as error:
        raise BranchError(f"Expected branch point '{after_layer}' in backbone '{graph.name}': {error}") from error
    if points is None:
        points = cut_points(graph)
    if ref not in points:
        nearby = [graph.nodes[r[0]].path for r in points][-6:]
        raise BranchError(
            f"Expected '{after_layer}' to cut backbone '{graph.name}' in two, but layers above it also read "
            f"layers below it (a skip connection) or it is the last layer. Branch points near the top: {nearby}."
        )
    return ref


def point_below(path: str | os.PathLike[str], layer_names: Iterable[str]) -> str:
    """Return the deepest branch point below every one of ``layer_names`` (backbone layer names).

    Used by fine-tuning: the layers it trains must all sit above the branch point; layers
    between the point and the lowest trained one are carried in the branch unchanged.

    Raises:
        BranchError: a name is not in the backbone, or no branch point lies below them all.
    """
    with KerasArchive(path) as opened:
        graph = opened.graph
        indices = set()
        for name in layer_names:
            matches = [node.index for node in graph.nodes if node.name == name or node.path == name]
            if not matches:
                raise BranchError(f"Expected layer '{name}' in backbone '{graph.name}', found none.")
            indices.update(matches)
        for ref in reversed(cut_points(graph)):
            if not indices & graph.ancestors(ref[0]):
                return graph.nodes[ref[0]].path
        names = sorted(graph.nodes[index].path for index in indices)
        raise BranchError(
            f"Expected a branch point below the layers to train ({', '.join(names[:4])}"
            f"{', ...' if len(names) > 4 else ''}) in '{graph.name}', but none lies below them all: they reach "
            "down to the backbone's first layer, or a skip connection spans them. Unfreeze fewer layers, or "
            "fine-tune with output 'backbone'."
        )


def cut_backbone(
    path: str | os.PathLike[str], after_layers: Iterable[str], *, include_top: bool = True, name: str = "trunk"
) -> Trunk:
    """Cut a backbone file at the given branch points into consecutive Keras segments.

    Args:
        path: the backbone's ``.keras`` file (one output: the features).
        after_layers: branch points (backbone layer names); repeats are fine.
        include_top: also build the segment from the last point to the features (only
            needed when some task uses the whole backbone).
        name: prefix of the segments' names.

    Returns:
        A :class:`Trunk`.

    Example:
        >>> trunk = cut_backbone("mobilenet.keras", ["block_14_add", "block_12_add"])
        >>> trunk.points
        ['block_12_add', 'block_14_add']
    """
    with KerasArchive(path) as opened:
        opened.check_layout()
        graph = opened.graph
        points = cut_points(graph)
        refs = sorted({point_ref(graph, layer, points) for layer in after_layers})
        ends = refs + ([graph.outputs[0]] if include_top or not refs else [])
        segments, start = [], None
        for position, end in enumerate(ends):
            start_name = BRANCH_INPUT_NAME if start is not None else "features"
            segments.append(build_submodel(opened, end, start=start, start_name=start_name, name=f"{name}_{position}"))
            start = end
        return Trunk(
            points=[graph.nodes[ref[0]].path for ref in refs],
            segments=segments,
            shapes=[list(graph.tensors[ref]["shape"][1:]) for ref in refs],
        )


def extract_branch(
    path: str | os.PathLike[str], after_layer: str, *, name: str = "branch", feature_layer: str | None = None
) -> tuple[Any, BranchInfo]:
    """Cut the branch above ``after_layer`` out of a backbone-shaped model file.

    Args:
        path: a ``.keras`` file whose layers carry the backbone's names (a fine-tuned copy
            of the backbone); its single output is the features unless ``feature_layer``
            names them.
        after_layer: the branch point.
        name: the branch model's name.
        feature_layer: the layer whose output is the features, when not the model's output.

    Returns:
        ``(branch, info)``: a Keras model whose input ``trunk`` is the tensor after
        ``after_layer`` and whose output is the features, and its :class:`BranchInfo`.
    """
    with KerasArchive(path) as opened:
        opened.check_layout()
        graph = opened.graph
        feature = graph.resolve(feature_layer) if feature_layer else graph.outputs[0]
        start = point_ref(graph, after_layer)
        branch = build_submodel(opened, feature, start=start, start_name=BRANCH_INPUT_NAME, name=name)
        names = submodel_layer_names(graph, feature, start=start, start_name=BRANCH_INPUT_NAME)
        layers = [graph.nodes[index].path for index in sorted(names)]
        return branch, BranchInfo(graph.nodes[start[0]].path, layers, int(branch.count_params()))


def check_branch_fits(
    branch: Any, point_shape: Sequence[int | None], feature_shape: Sequence[int | None], *, label: str
) -> None:
    """Raise BranchError unless ``branch`` maps the trunk tensor's shape to the features' shape."""
    got_in = [None if d is None else int(d) for d in branch.inputs[0].shape[1:]]
    got_out = [None if d is None else int(d) for d in branch.outputs[0].shape[1:]]
    if len(branch.inputs) != 1 or got_in != list(point_shape) or got_out != list(feature_shape):
        raise BranchError(
            f"Expected the branch of {label} to take {list(point_shape)} (the trunk at its branch point) and "
            f"return {list(feature_shape)} (the features), it takes {got_in} and returns {got_out}. "
            "It was cut from another backbone: import it again on this one."
        )


def trunk_until(backbone: Any, after_layer: str) -> Any:
    """Return a Keras model computing the backbone's tensor after ``after_layer`` (for references).

    Works on the Keras model itself, not on the file, so it checks :func:`cut_backbone`
    independently.
    """
    import keras

    layer = backbone.get_layer(after_layer)
    return keras.Model(backbone.inputs, layer.output, name=f"{backbone.name}_until_{after_layer}")


def fine_tune_branch_point(path: str | os.PathLike[str], backbone: Any, num_layers: int) -> str:
    """Return where the branch of a fine-tune of the top ``num_layers`` weight-bearing layers starts.

    Call it before training to fail early: raises BranchError when no branch point lies below
    those layers (see :func:`point_below`).

    Args:
        path: the backbone's ``.keras`` file.
        backbone: the same backbone, loaded (its features are the output).
        num_layers: the fine-tune's ``unfreeze_layers``.

    Example:
        >>> fine_tune_branch_point("mobilenet.keras", mobilenet, 9)
        'block_14_add'
    """
    return point_below(path, top_weight_layers(backbone, num_layers))


def branch_from_fine_tune(
    *,
    parent_path: str | os.PathLike[str],
    parent: Any,
    tuned: Any,
    head: Any,
    trained_layers: Sequence[str],
    name: str = "branch",
    probe: Any = None,
) -> tuple[Any, BranchInfo, dict[str, Any]]:
    """Keep what a fine-tune changed as a branch on the parent's unchanged trunk, and check it.

    The branch starts at the deepest branch point below every trained layer
    (:func:`point_below`); layers between that point and the lowest trained one are carried
    in the branch unchanged. Two checks make sure nothing is lost: every weight below the
    point is bit-identical to the parent's, and on the probe rows
    ``head(branch(trunk(x)))`` (the trunk cut from the parent's file, as an assembly cuts
    it) equals ``head(tuned(x))`` within the one tolerance (:data:`modelhub.ml.tolerance.VERIFY_TOLERANCE`), scaled.

    Args:
        parent_path: the parent backbone's ``.keras`` file.
        parent: the parent backbone as fine-tuned from (its features are the output).
        tuned: the fine-tuned copy of ``parent`` (same layer names, as ``fine_tune`` returns it).
        head: the head trained with it, on the features.
        trained_layers: the layers the fine-tune trained (``result["unfreeze"]["unfrozen_layers"]``).
        name: the branch model's name.
        probe: inputs to check on; default a few deterministic rows (:func:`modelhub.ml.probes.probe_inputs_for`).

    Returns:
        ``(branch, info, verification)``: the branch model (input ``trunk``, output the
        features), its :class:`BranchInfo`, and ``{"max_abs_diff", "max_rel_diff",
        "tolerance", "num_probe_rows"}`` of the check.

    Raises:
        BranchError: no branch point lies below the trained layers, or a check fails.

    Example:
        >>> result = fine_tune(backbone=bb, head=h, x=x, y=y, phase1_epochs=1, phase2_epochs=1,
        ...                    unfreeze_layers=2)
        >>> branch, info, _ = branch_from_fine_tune(parent_path="bb.keras", parent=bb,
        ...     tuned=result["backbone"], head=h, trained_layers=result["unfreeze"]["unfrozen_layers"])
        >>> info.after_layer
        'block_16_project_BN'
    """
    import tempfile
    from pathlib import Path

    point = point_below(parent_path, trained_layers)
    with tempfile.TemporaryDirectory(prefix="modelhub-branch-") as tmp:
        tuned_path = Path(tmp) / "tuned.keras"
        tuned.save(tuned_path)
        branch, info = extract_branch(tuned_path, point, name=name)
    owned = {_leaf_name(layer) for layer in info.layers}
    missing = [layer for layer in trained_layers if _leaf_name(layer) not in owned]
    if missing:
        raise BranchError(
            f"Expected the branch after '{point}' to hold every trained layer, it lacks {missing}. "
            "Fine-tune with output 'backbone' instead."
        )
    _check_trunk_unchanged(parent, tuned, owned)
    trunk = cut_backbone(parent_path, [point], include_top=False, name=f"{name}_trunk").segments[0]
    if probe is None:
        probe = probe_inputs_for(parent)
    expected = _numpy(head(tuned(probe, training=False), training=False))
    got = _numpy(head(branch(trunk(probe, training=False), training=False), training=False))
    verification = check_close(
        expected, got, what=f"the parent's trunk, the branch after '{point}' and the head", error=BranchError
    )
    return branch, info, {**verification, "num_probe_rows": int(expected.shape[0])}


def _leaf_name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _check_trunk_unchanged(parent: Any, tuned: Any, owned: set[str]) -> None:
    """Raise BranchError unless every layer outside the branch kept the parent's weights bit for bit."""
    parent_layers, tuned_layers = iter_leaf_layers(parent), iter_leaf_layers(tuned)
    if [layer.name for layer in parent_layers] != [layer.name for layer in tuned_layers]:
        raise BranchError(f"Expected the tuned backbone to have the layers of '{parent.name}', they differ.")
    for before, after in zip(parent_layers, tuned_layers, strict=True):
        if after.name in owned:
            continue
        for old, new in zip(before.weights, after.weights, strict=True):
            if not np.array_equal(_numpy(old), _numpy(new)):
                raise BranchError(
                    f"Expected layer '{after.name}' below the branch point to keep the parent's weights, "
                    f"but '{new.path}' changed. Only the branch may change; fine-tune with output 'backbone'."
                )


def _numpy(value: Any) -> np.ndarray:
    import keras

    return np.asarray(keras.ops.convert_to_numpy(value))


def _layer_sizes(opened: KerasArchive) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for node in opened.graph.nodes:
        key = node.layer_key
        if not key or key in sizes or key.startswith(OPERATION_KEY_PREFIX) or node.is_input:
            continue
        sizes[key] = int(
            sum(np.prod(array.shape) for name, array in opened.layer_state(key) if not name.startswith("assets/"))
        )
    return sizes


__all__ = [
    "BranchError",
    "BranchInfo",
    "Trunk",
    "branch_from_fine_tune",
    "check_branch_fits",
    "cut_backbone",
    "cut_points",
    "describe_points",
    "extract_branch",
    "fine_tune_branch_point",
    "point_below",
    "point_ref",
    "trunk_until",
]
