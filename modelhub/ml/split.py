"""Split full models into a shared backbone and standalone heads.

Users often arrive with many full models that share the same backbone weights and
differ only in their heads. This module finds the backbone inside a full model
(nested as a sub-model, or flattened: the same layers called directly), proves the
backbone weights are bit-identical, and cuts the head out as a standalone Keras model
whose input is the feature tensor. The cut is verified on probe inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from modelhub.ml.errors import (
    BackboneMismatchError,
    FeatureShapeMismatchError,
    HeadExtractionError,
    LayerNotFoundError,
)
from modelhub.ml.inspect import (
    backbone_up_to,
    graph_nodes,
    iter_leaf_layers,
    layer_output_tensor,
)

HEAD_INPUT_NAME = "features"


def extract_head(
    full_model: keras.Model,
    backbone: keras.Model,
    *,
    feature_layer: str | None = None,
    probe_inputs: np.ndarray | None = None,
    atol: float = 1e-6,
    name: str = "head",
) -> keras.Model:
    """Cut the head out of ``full_model``, given the backbone it was built on.

    Args:
        full_model: backbone + head, functional. The backbone may be a nested
            sub-model or flattened into the full model's graph.
        backbone: the reference backbone; its weights must be bit-identical to the
            backbone part of ``full_model``.
        feature_layer: name of the layer (in ``full_model``) whose output is the
            feature tensor; defaults to the nested backbone, or the backbone's last
            layer name.
        probe_inputs: inputs for the equivalence check; random when None.
        atol: largest accepted max abs difference between ``full_model`` and
            ``head(backbone(x))``.
        name: name of the returned model.

    Returns:
        A standalone ``keras.Model`` (own weights) whose single input, named
        ``"features"``, has the backbone's feature shape.

    Raises:
        BackboneMismatchError: the backbone is not found or its weights differ.
        HeadExtractionError: the head depends on more than the feature tensor, or
            its outputs differ from the full model's.

    Example:
        >>> head = extract_head(full_model, backbone)
        >>> head.input_shape
        (None, 1280)
    """
    feature_tensor, pairs = _locate_backbone(full_model, backbone, feature_layer)
    check_weights_identical(pairs, context=f"model '{full_model.name}'")
    head = _cut_head(full_model, feature_tensor, name=name)
    if probe_inputs is None:
        probe_inputs = probe_inputs_for(backbone)
    expected = _as_list(full_model(probe_inputs, training=False))
    got = _as_list(head(backbone(probe_inputs, training=False), training=False))
    diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(expected, got, strict=True))
    if not diff <= atol:
        raise HeadExtractionError(
            f"Expected the extracted head to reproduce '{full_model.name}' within {atol}, "
            f"max abs diff is {diff:.3g}. The part after the feature tensor probably uses "
            "training-time behaviour or state outside the head; check the feature layer."
        )
    return head


def backbone_from_models(models: Sequence[keras.Model], feature_layer: str, *, copy: bool = True) -> keras.Model:
    """Take the backbone from the first model and verify that all models share it.

    Args:
        models: K >= 1 full models.
        feature_layer: name of the layer whose output is the feature tensor (a nested
            backbone's name works too).
        copy: return a model with its own weights (default) rather than one sharing
            layers with ``models[0]``.

    Returns:
        The backbone ``keras.Model`` (inputs of ``models[0]`` to ``feature_layer``).

    Raises:
        BackboneMismatchError: naming the first model, layer and max abs difference
            where a backbone differs.

    Example:
        >>> backbone = backbone_from_models(full_models, "global_average_pooling2d")
    """
    if not models:
        raise BackboneMismatchError("Expected at least one model, received none.")
    reference = backbone_up_to(models[0], feature_layer)
    reference_layers = iter_leaf_layers(reference)
    for index, model in enumerate(models[1:], start=1):
        try:
            candidate = backbone_up_to(model, feature_layer)
        except LayerNotFoundError as error:
            raise BackboneMismatchError(
                f"Expected model {index} ('{model.name}') to contain feature layer "
                f"'{feature_layer}' like model 0: {error}"
            ) from error
        candidate_layers = iter_leaf_layers(candidate)
        _check_same_structure(reference_layers, candidate_layers, f"model {index} ('{model.name}')")
        check_weights_identical(
            list(zip(reference_layers, candidate_layers, strict=True)), context=f"model {index} ('{model.name}')"
        )
    if copy:
        from modelhub.ml.inspect import copy_model

        return copy_model(reference)
    return reference


def check_weights_identical(
    pairs: Sequence[tuple[keras.layers.Layer, keras.layers.Layer]], *, context: str = "model"
) -> None:
    """Raise unless every (reference, candidate) layer pair has bit-identical weights.

    Args:
        pairs: (reference layer, candidate layer) in backbone order.
        context: how to name the candidate in the error message.

    Raises:
        BackboneMismatchError: naming the first differing layer and its max abs diff.
    """
    for reference, candidate in pairs:
        ref_weights = reference.get_weights()
        cand_weights = candidate.get_weights()
        if len(ref_weights) != len(cand_weights):
            raise BackboneMismatchError(
                f"Expected layer '{reference.name}' to carry {len(ref_weights)} weights in "
                f"{context}, found {len(cand_weights)}. Use the same backbone architecture."
            )
        for index, (a, b) in enumerate(zip(ref_weights, cand_weights, strict=True)):
            if a.shape != b.shape or a.dtype != b.dtype:
                raise BackboneMismatchError(
                    f"Expected weight {index} of layer '{reference.name}' to be "
                    f"{a.dtype}{list(a.shape)} in {context}, found {b.dtype}{list(b.shape)}."
                )
            if a.tobytes() != b.tobytes():
                diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
                raise BackboneMismatchError(
                    f"Expected bit-identical backbone weights, but layer '{reference.name}' "
                    f"(weight {index}) differs in {context}: max abs diff {diff:.6g}. The full "
                    "model was trained or fine-tuned past this backbone version; register its "
                    "backbone as a new version or upload the matching one."
                )


def check_head_compatible(
    head: keras.Model, feature_shape: Sequence[int | None], *, backbone_label: str = "backbone"
) -> None:
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


def probe_inputs_for(model: keras.Model, *, num_rows: int = 4, seed: int = 0) -> np.ndarray:
    """Return deterministic random inputs matching ``model``'s single input."""
    if len(model.inputs) != 1:
        raise HeadExtractionError(
            f"Expected a single-input model, '{model.name}' has {len(model.inputs)} inputs; "
            "pass probe_inputs explicitly."
        )
    spec = model.inputs[0]
    shape = [num_rows] + [1 if d is None else int(d) for d in spec.shape[1:]]
    rng = np.random.default_rng(seed)
    dtype = np.dtype(str(spec.dtype))
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 10, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _locate_backbone(
    full_model: keras.Model, backbone: keras.Model, feature_layer: str | None
) -> tuple[Any, list[tuple[keras.layers.Layer, keras.layers.Layer]]]:
    backbone_leaves = iter_leaf_layers(backbone)
    # Nested: a sub-model with the backbone's structure.
    for layer, node in graph_nodes(full_model):
        if not isinstance(layer, keras.Model):
            continue
        if feature_layer is not None and layer.name != feature_layer:
            continue
        leaves = iter_leaf_layers(layer)
        if layer is backbone or _same_structure(backbone_leaves, leaves):
            if len(node.output_tensors) != 1:
                break
            return node.output_tensors[0], list(zip(backbone_leaves, leaves, strict=True))
    # Flattened by name: the backbone's layers appear in the full model's graph.
    name = feature_layer or backbone.layers[-1].name
    full_by_name = {layer.name: layer for layer in iter_leaf_layers(full_model)}
    if name in full_by_name and all(leaf.name in full_by_name for leaf in backbone_leaves):
        tensor = layer_output_tensor(full_model, name)
        leaves = [full_by_name[leaf.name] for leaf in backbone_leaves]
        _check_same_structure(backbone_leaves, leaves, f"model '{full_model.name}'")
        return tensor, list(zip(backbone_leaves, leaves, strict=True))
    # Flattened by position: the first layers of the full model mirror the backbone.
    count = len(backbone.layers)
    prefix = full_model.layers[:count]
    if len(prefix) == count and _same_structure(
        [layer for layer in backbone.layers if not isinstance(layer, keras.Model)],
        [layer for layer in prefix if not isinstance(layer, keras.Model)],
    ):
        anchor = prefix[-1].name if feature_layer is None else feature_layer
        tensor = layer_output_tensor(full_model, anchor)
        return tensor, list(zip(backbone.layers, prefix, strict=True))
    raise BackboneMismatchError(
        f"Expected to find backbone '{backbone.name}' ({len(backbone_leaves)} layers ending in "
        f"'{backbone.layers[-1].name}') inside model '{full_model.name}', as a nested "
        "sub-model or as the same layers called directly; found neither. Pass feature_layer "
        "with the name of the last backbone layer in the full model."
    )


def _same_structure(a: Sequence[keras.layers.Layer], b: Sequence[keras.layers.Layer]) -> bool:
    if len(a) != len(b):
        return False
    for left, right in zip(a, b, strict=True):
        if type(left).__name__ != type(right).__name__:
            return False
        if [tuple(w.shape) for w in left.weights] != [tuple(w.shape) for w in right.weights]:
            return False
    return True


def _check_same_structure(
    reference: Sequence[keras.layers.Layer], candidate: Sequence[keras.layers.Layer], context: str
) -> None:
    if len(reference) != len(candidate):
        raise BackboneMismatchError(
            f"Expected a backbone of {len(reference)} layers in {context}, found "
            f"{len(candidate)}. The models do not share the backbone architecture."
        )
    for left, right in zip(reference, candidate, strict=True):
        left_shapes = [tuple(w.shape) for w in left.weights]
        right_shapes = [tuple(w.shape) for w in right.weights]
        if type(left).__name__ != type(right).__name__ or left_shapes != right_shapes:
            raise BackboneMismatchError(
                f"Expected layer '{left.name}' ({type(left).__name__}, weights {left_shapes}) "
                f"in {context}, found '{right.name}' ({type(right).__name__}, weights "
                f"{right_shapes}). The models do not share the backbone architecture."
            )


def _cut_head(full_model: keras.Model, feature_tensor: Any, *, name: str) -> keras.Model:
    try:
        shared = keras.Model(feature_tensor, full_model.outputs)
    except ValueError as error:
        raise HeadExtractionError(
            f"Expected the head of '{full_model.name}' to depend only on the feature tensor, "
            f"but cutting it failed: {error}. Skip connections from inside the backbone to "
            "the head are not supported; choose a later feature layer."
        ) from error
    used_inputs = {id(t) for layer, node in graph_nodes(shared) for t in node.input_tensors}
    if any(id(t) in used_inputs for t in full_model.inputs):
        raise HeadExtractionError(
            f"Expected the head of '{full_model.name}' to depend only on the feature tensor, it "
            "also reads the model input. Choose a feature layer after every branch point."
        )
    features = keras.Input(shape=tuple(feature_tensor.shape[1:]), dtype=feature_tensor.dtype, name=HEAD_INPUT_NAME)
    head = keras.models.clone_model(shared, input_tensors=features, recursive=True)
    head.set_weights(shared.get_weights())
    outputs = head.outputs[0] if len(head.outputs) == 1 else head.outputs
    return keras.Model(features, outputs, name=name)


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, dict):
        return [value[key] for key in sorted(value)]
    return [value]
