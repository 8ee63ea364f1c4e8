"""Describe Keras models as plain data and fingerprint their weights.

The registry stores what a worker learns about an uploaded model (inputs, feature
layer, parameter counts, layers) as JSON, and tells backbones apart by a sha256 over
their weights. This module also holds the small graph helpers (find a layer's output
tensor inside a functional graph, cut a model at a layer) that split, grow and freeze
build on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from modelhub.ml.errors import FeatureShapeMismatchError, LayerNotFoundError
from modelhub.ml.keras_file.graph import normalized_config


def inspect_model(model: keras.Model, *, feature_layer: str | None = None) -> dict[str, Any]:
    """Describe ``model`` as JSON-able data.

    Args:
        model: a built Keras model.
        feature_layer: the layer whose output is the feature vector; the model output
            when None.

    Returns:
        ``{"name", "class_name", "inputs": [{"name", "shape", "dtype"}], "feature_layer",
        "feature_shape", "params": {"total", "trainable", "non_trainable"},
        "layers": [{"name", "type", "params", "trainable", "has_weights"}],
        "weights_sha256"}``. Shapes exclude the batch dimension.

    Example:
        >>> inspect_model(model)["params"]["total"]
        1290
    """
    inputs = [
        {
            "name": input_name(tensor, default=f"input_{index}"),
            "shape": _shape_list(tensor.shape[1:]),
            "dtype": str(tensor.dtype),
        }
        for index, tensor in enumerate(model.inputs)
    ]
    if feature_layer is None:
        outputs = model.outputs
        feature_name = model.layers[-1].name if model.layers else model.name
        feature_shape = (
            _shape_list(outputs[0].shape[1:]) if len(outputs) == 1 else [_shape_list(out.shape[1:]) for out in outputs]
        )
    else:
        tensor = layer_output_tensor(model, feature_layer)
        feature_name = feature_layer
        feature_shape = _shape_list(tensor.shape[1:])
    trainable = _count(model.trainable_weights)
    non_trainable = _count(model.non_trainable_weights)
    return {
        "name": model.name,
        "class_name": type(model).__name__,
        "inputs": inputs,
        "feature_layer": feature_name,
        "feature_shape": feature_shape,
        "params": {
            "total": trainable + non_trainable,
            "trainable": trainable,
            "non_trainable": non_trainable,
        },
        "layers": [
            {
                "name": layer.name,
                "type": type(layer).__name__,
                "params": _count(layer.weights),
                "trainable": bool(layer.trainable),
                "has_weights": bool(layer.weights),
            }
            for layer in model.layers
        ],
        "weights_sha256": weights_fingerprint(model),
    }


FINGERPRINT_VERSION = "modelhub-backbone-identity-v2"


def weights_fingerprint(model: keras.Model) -> str:
    """Return the backbone's identity: a sha256 over what it computes, not what it is called.

    Covers, in graph order: every leaf layer's class and config (names, trainable flags and
    initializers left out), its weights (shapes, dtypes, bytes), its vocabulary if it has
    one, how the layers are wired, and where the model ends (the feature layer). Two
    backbones that differ only in a weight-free layer (an activation, a pooling) or in the
    cut point therefore differ; the same network saved twice, renamed or reloaded does not.

    Args:
        model: a built Keras model (or layer).

    Returns:
        64 hex characters.

    Example:
        >>> weights_fingerprint(backbone) == weights_fingerprint(reloaded_backbone)
        True
    """
    digest = hashlib.sha256(FINGERPRINT_VERSION.encode() + b"\n")
    leaves = iter_leaf_layers(model)
    for position, layer in enumerate(leaves):
        try:
            config = normalized_config(layer.get_config())
        except NotImplementedError:
            config = {}
        digest.update(f"{position}:{type(layer).__name__}:{json.dumps(config, sort_keys=True, default=str)}\n".encode())
        for index, weight in enumerate(layer.weights):
            array = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
            digest.update(f"w{index}:{list(array.shape)}:{array.dtype.str}\n".encode())
            digest.update(array.tobytes())
        if hasattr(layer, "get_vocabulary"):
            try:
                digest.update(json.dumps([str(w) for w in layer.get_vocabulary()]).encode())
            except Exception:  # noqa: BLE001 - a layer without a vocabulary yet
                pass
    if isinstance(model, keras.Model) and hasattr(model, "outputs"):
        position = {id(layer): index for index, layer in enumerate(getattr(model, "layers", []))}
        for layer, node in graph_nodes(model):
            parents = sorted(
                position.get(id(tensor._keras_history[0]), -1)
                for tensor in node.input_tensors
                if getattr(tensor, "_keras_history", None) is not None
            )
            digest.update(f"edge:{position.get(id(layer), -1)}<-{parents}\n".encode())
        digest.update(f"outputs:{[list(t.shape) for t in model.outputs]}\n".encode())
    return digest.hexdigest()


def iter_leaf_layers(model: keras.layers.Layer) -> list[keras.layers.Layer]:
    """Return the non-model layers of ``model`` in order, descending into sub-models."""
    result: list[keras.layers.Layer] = []
    for layer in getattr(model, "layers", [model]):
        if isinstance(layer, keras.Model):
            result.extend(iter_leaf_layers(layer))
        else:
            result.append(layer)
    return result


def graph_nodes(model: keras.Model) -> list[tuple[keras.layers.Layer, Any]]:
    """Return ``(layer, node)`` for every call inside ``model``'s functional graph.

    Walks back from the model outputs, so only nodes that belong to this graph are
    returned (a shared layer or nested model may have nodes in other graphs). The
    order is topological (inputs first).
    """
    seen: dict[int, tuple[keras.layers.Layer, Any]] = {}
    order: list[tuple[keras.layers.Layer, Any]] = []

    def visit(tensor: Any) -> None:
        history = getattr(tensor, "_keras_history", None)
        if history is None:
            return
        operation, node_index, _ = history
        node = operation._inbound_nodes[node_index]
        if id(node) in seen:
            return
        seen[id(node)] = (operation, node)
        for parent in node.input_tensors:
            visit(parent)
        order.append((operation, node))

    for output in model.outputs:
        visit(output)
    return order


def layer_output_tensor(model: keras.Model, layer_name: str) -> Any:
    """Return the output KerasTensor of the layer named ``layer_name`` in ``model``'s graph.

    Raises:
        LayerNotFoundError: no such layer, or it is called several times.
    """
    matches = [node for layer, node in graph_nodes(model) if layer.name == layer_name]
    if not matches:
        names = [layer.name for layer in model.layers]
        raise LayerNotFoundError(
            f"Expected a layer named '{layer_name}' in model '{model.name}', found none. "
            f"Top-level layers are: {names[:20]}{' ...' if len(names) > 20 else ''}. "
            "Pass one of these names."
        )
    if len(matches) > 1:
        raise LayerNotFoundError(
            f"Expected layer '{layer_name}' to be called once in model '{model.name}', it is "
            f"called {len(matches)} times, so its output is ambiguous. Pick another layer."
        )
    outputs = matches[0].output_tensors
    if len(outputs) != 1:
        raise LayerNotFoundError(f"Expected layer '{layer_name}' to have one output, it has {len(outputs)}.")
    return outputs[0]


def backbone_up_to(model: keras.Model, feature_layer: str, *, copy: bool = False) -> keras.Model:
    """Return the model from ``model``'s inputs to ``feature_layer``'s output.

    Args:
        model: a functional (or Sequential) Keras model.
        feature_layer: name of the last backbone layer.
        copy: when True the result owns fresh copies of the weights; otherwise it
            shares layers (and weights) with ``model``.

    Returns:
        A ``keras.Model`` whose output is the feature tensor.

    Example:
        >>> backbone = backbone_up_to(full_model, "pool")
    """
    tensor = layer_output_tensor(model, feature_layer)
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    backbone = keras.Model(inputs, tensor, name=f"{model.name}_backbone")
    return copy_model(backbone) if copy else backbone


def copy_model(model: keras.Model) -> keras.Model:
    """Return an independent copy of ``model`` (same config, copied weights and vocabularies).

    A lookup layer's vocabulary (TextVectorization, StringLookup) lives in a table, not in
    weights, so it is copied layer by layer.
    """
    clone = keras.models.clone_model(model, recursive=True)
    clone.set_weights(model.get_weights())
    for source, target in zip(iter_leaf_layers(model), iter_leaf_layers(clone), strict=True):
        if hasattr(source, "get_vocabulary") and hasattr(target, "set_vocabulary"):
            target.set_vocabulary(source.get_vocabulary())
    return clone


def input_name(tensor: Any, default: str = "inputs") -> str:
    """Return the name of the Input layer behind a model input tensor (``default`` if none)."""
    history = getattr(tensor, "_keras_history", None)
    if history is not None:
        return history[0].name
    return str(getattr(tensor, "name", default))


def _shape_list(shape: Any) -> list[int | None]:
    return [None if dim is None else int(dim) for dim in shape]


def _count(weights: list[Any]) -> int:
    return int(sum(int(np.prod(weight.shape)) for weight in weights))


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
