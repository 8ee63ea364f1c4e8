"""Grow a trained model without changing what it computes (Net2DeeperNet, Net2WiderNet).

Layers are inserted after a named layer of a functional model with
``keras.models.clone_model(..., call_function=...)`` and initialised so the new
model computes the same function: an identity Dense (ReLU only where the input is
provably non-negative), a Dirac Conv2D (odd kernel, 'same' padding), or a residual
block whose last kernel is zero. Widening replicates units of a Dense/Conv2D layer,
copies the matching per-channel state (BatchNorm statistics, depthwise kernels) and
divides the outgoing weights. Every growth is verified on probe inputs and refused
above the tolerance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from modelhub.ml.errors import GrowthError, GrowthNotPreservedError, LayerNotFoundError
from modelhub.ml.inspect import graph_nodes
from modelhub.ml.probes import ProbeShape, probe_inputs_for, rows_probe_shape
from modelhub.ml.tolerance import VERIFY_TOLERANCE

KINDS = ("dense_identity", "conv_identity", "residual", "widen")
TRAIN_OPTIONS = ("new", "all")
# Layers that act on each channel independently (a widened unit can pass through them).
PER_CHANNEL_LAYERS = (
    keras.layers.BatchNormalization,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.Dropout,
    keras.layers.ZeroPadding2D,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.DepthwiseConv2D,
)
# Layers whose output is non-negative whenever their input is.
SIGN_PRESERVING_LAYERS = (
    keras.layers.Dropout,
    keras.layers.ZeroPadding2D,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.Flatten,
    keras.layers.Reshape,
)
NON_NEGATIVE_ACTIVATIONS = frozenset({"relu", "relu6", "sigmoid", "softmax", "softplus", "hard_sigmoid"})


def grow_model(
    model: keras.Model,
    *,
    kind: str,
    after: str | None = None,
    layer: str | None = None,
    units: int | None = None,
    kernel_size: int = 3,
    hidden_units: int | None = None,
    train: str = "new",
    probe_inputs: np.ndarray | None = None,
    probe_shape: ProbeShape | None = None,
    rtol: float = VERIFY_TOLERANCE,
    seed: int = 0,
) -> dict[str, Any]:
    """Return a grown copy of ``model`` that computes the same function.

    Args:
        model: a functional or Sequential Keras model; it is not modified.
        kind: ``"dense_identity"``, ``"conv_identity"``, ``"residual"`` (insert after
            ``after``) or ``"widen"`` (widen ``layer`` to ``units``).
        after: name of the layer to insert after (insert kinds).
        layer: name of the Dense/Conv2D layer to widen (``"widen"``).
        units: new number of units/filters (``"widen"``); must exceed the current one.
        kernel_size: odd kernel size for ``"conv_identity"``.
        hidden_units: width of the residual block's first layer (default: the input's).
        train: ``"new"`` makes only the new/changed layers trainable, ``"all"`` every layer.
        probe_inputs: inputs for verification; deterministic random ones when None.
        probe_shape: ``{input name: [dims of one row]}`` of those random rows for inputs of open
            (None) length (a request's, or a dataset's); default: a length the model accepts.
        rtol: largest accepted max abs diff relative to max(1, the largest output magnitude).
        seed: seeds the residual block's first kernel.

    Returns:
        ``{"model": keras.Model, "kind": str, "new_layers": [str], "changed_layers": [str],
        "verification": {"max_abs_diff", "relative_diff", "max_abs_output", "rtol", "probe_shape"},
        "params": {"before", "after", "trainable"}}``.

    Raises:
        GrowthError: unsupported kind, layer or graph (e.g. inside a nested Sequential).
        GrowthNotPreservedError: the grown model differs by more than ``rtol``.

    Example:
        >>> grown = grow_model(model, kind="conv_identity", after="block_3_expand_relu")
        >>> grown["verification"]["max_abs_diff"]
        0.0
    """
    if kind not in KINDS:
        raise GrowthError(f"Expected kind in {KINDS}, received '{kind}'.")
    if train not in TRAIN_OPTIONS:
        raise GrowthError(f"Expected train in {TRAIN_OPTIONS}, received '{train}'.")
    source = as_functional(model)
    keras.utils.set_random_seed(seed)
    if kind == "widen":
        if layer is None or units is None:
            raise GrowthError("Expected layer= and units= for kind 'widen', received None.")
        grown, new_layers, changed = _widen(source, layer, units)
    else:
        if after is None:
            raise GrowthError(f"Expected after= (a layer name) for kind '{kind}', received None.")
        block = _block_factory(kind, source, after, kernel_size, hidden_units)
        grown, new_layers = _insert_after(source, after, block)
        changed = []
    if train == "new":
        names = set(new_layers) | set(changed)
        for item in grown.layers:
            item.trainable = item.name in names
    else:
        for item in grown.layers:
            item.trainable = True
    if probe_inputs is None:
        probe_inputs = probe_inputs_for(model, num_rows=4, seed=seed, probe_shape=probe_shape)
    verification = compare_outputs(model, grown, probe_inputs)
    verification["rtol"] = rtol
    verification["probe_shape"] = rows_probe_shape(model, probe_inputs, open_only=False)
    if not verification["relative_diff"] <= rtol:
        raise GrowthNotPreservedError(
            f"Expected the grown model to match the original within relative {rtol}, got max abs "
            f"diff {verification['max_abs_diff']:.3g} (relative {verification['relative_diff']:.3g}, "
            f"largest output {verification['max_abs_output']:.3g}). The growth '{kind}' is refused; "
            "pick another anchor layer or kind."
        )
    trainable = int(sum(int(np.prod(w.shape)) for w in grown.trainable_weights))
    return {
        "model": grown,
        "kind": kind,
        "new_layers": list(new_layers),
        "changed_layers": list(changed),
        "verification": verification,
        "params": {"before": int(model.count_params()), "after": int(grown.count_params()), "trainable": trainable},
    }


def compare_outputs(reference: keras.Model, candidate: keras.Model, inputs: np.ndarray) -> dict[str, float]:
    """Return max abs and relative difference of two models' outputs on ``inputs``."""
    expected = np.asarray(reference(inputs, training=False), dtype=np.float64)
    got = np.asarray(candidate(inputs, training=False), dtype=np.float64)
    max_abs = float(np.max(np.abs(expected - got))) if expected.size else 0.0
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    # Scale-aware: float noise grows with the values, so compare against max(1, max |output|).
    relative = max_abs / max(1.0, scale)
    return {"max_abs_diff": max_abs, "relative_diff": relative, "max_rel_diff": relative, "max_abs_output": scale}


def as_functional(model: keras.Model) -> keras.Model:
    """Return ``model`` as a functional model (a top-level Sequential is rebuilt, sharing layers)."""
    if isinstance(model, keras.Sequential):
        spec = model.inputs[0]
        inputs = keras.Input(batch_shape=spec.shape, dtype=spec.dtype, name=f"{model.name}_input")
        x = inputs
        for item in model.layers:
            x = item(x)
        return keras.Model(inputs, x, name=model.name)
    if not hasattr(model, "_run_through_graph"):
        raise GrowthError(
            f"Expected a functional or Sequential model, received a subclassed '{type(model).__name__}'. "
            "Rebuild it with the functional API to grow it."
        )
    return model


def provably_non_negative(model: keras.Model, layer_name: str) -> bool:
    """Return True when the output of ``layer_name`` can never be negative."""
    producers = {item.name: (item, node) for item, node in graph_nodes(model)}
    name = layer_name
    while name in producers:
        item, node = producers[name]
        if isinstance(item, keras.layers.ReLU):
            return (item.negative_slope == 0) and (item.threshold >= 0)
        activation = getattr(item, "activation", None)
        if activation is not None and not isinstance(
            item, keras.layers.Activation | keras.layers.Dense | keras.layers.Conv2D
        ):
            activation = None
        if activation is not None:
            serialized = keras.activations.serialize(activation)
            return isinstance(serialized, str) and serialized in NON_NEGATIVE_ACTIVATIONS
        if isinstance(item, SIGN_PRESERVING_LAYERS) and len(node.input_tensors) == 1:
            name = node.input_tensors[0]._keras_history[0].name
            continue
        return False
    return False


def _block_factory(
    kind: str, model: keras.Model, after: str, kernel_size: int, hidden_units: int | None
) -> Callable[[Any], tuple[Any, list[keras.layers.Layer]]]:
    anchor = _find_top_level(model, after)
    shape = anchor.output.shape if not isinstance(anchor, keras.Model) else anchor.outputs[0].shape
    for item, node in graph_nodes(model):
        if item.name == after:
            shape = node.output_tensors[0].shape
    rank = len(shape)
    channels = shape[-1]
    non_negative = provably_non_negative(model, after)
    activation = "relu" if non_negative else None
    prefix = f"{after}_{kind}"

    if kind == "dense_identity":
        if rank != 2:
            raise GrowthError(
                f"Expected a [batch, features] output after '{after}' for a Dense identity, "
                f"found shape {list(shape)}. Use conv_identity for image features."
            )

        def block(x: Any) -> tuple[Any, list[keras.layers.Layer]]:
            dense = keras.layers.Dense(channels, activation=activation, name=prefix)
            y = dense(x)
            dense.set_weights([np.eye(channels, dtype="float32"), np.zeros(channels, "float32")])
            return y, [dense]

        return block
    if kind == "conv_identity":
        if rank != 4:
            raise GrowthError(
                f"Expected a [batch, height, width, channels] output after '{after}' for a Conv2D "
                f"identity, found shape {list(shape)}. Use dense_identity for vectors."
            )
        if kernel_size % 2 != 1:
            raise GrowthError(
                f"Expected an odd kernel_size for a Dirac identity, received {kernel_size}. "
                "An even kernel has no centre tap; use 1, 3 or 5."
            )

        def block(x: Any) -> tuple[Any, list[keras.layers.Layer]]:
            conv = keras.layers.Conv2D(channels, kernel_size, padding="same", activation=activation, name=prefix)
            y = conv(x)
            kernel = np.zeros((kernel_size, kernel_size, channels, channels), "float32")
            center = kernel_size // 2
            kernel[center, center, np.arange(channels), np.arange(channels)] = 1.0
            conv.set_weights([kernel, np.zeros(channels, "float32")])
            return y, [conv]

        return block
    # residual
    if rank not in (2, 4):
        raise GrowthError(f"Expected a rank-2 or rank-4 output after '{after}', found {list(shape)}.")
    hidden = hidden_units or channels

    def block(x: Any) -> tuple[Any, list[keras.layers.Layer]]:
        if rank == 2:
            first = keras.layers.Dense(hidden, activation="relu", name=f"{prefix}_1")
            last = keras.layers.Dense(channels, kernel_initializer="zeros", name=f"{prefix}_2")
        else:
            first = keras.layers.Conv2D(hidden, 3, padding="same", activation="relu", name=f"{prefix}_1")
            last = keras.layers.Conv2D(channels, 3, padding="same", kernel_initializer="zeros", name=f"{prefix}_2")
        add = keras.layers.Add(name=f"{prefix}_add")
        y = add([x, last(first(x))])
        return y, [first, last, add]

    return block


def _find_top_level(model: keras.Model, name: str) -> keras.layers.Layer:
    for item in model.layers:
        if item.name == name:
            return item
    for item in model.layers:
        if isinstance(item, keras.Model):
            try:
                item.get_layer(name)
            except ValueError:
                continue
            if isinstance(item, keras.Sequential):
                raise GrowthError(
                    f"Layer '{name}' lives inside the nested Sequential '{item.name}', which clone_model "
                    "cannot rewrite. Rebuild that part as a functional model (or flatten it), then grow."
                )
            raise GrowthError(
                f"Layer '{name}' lives inside the nested model '{item.name}'. Grow that sub-model on "
                "its own (pass it as the model), then rebuild the outer model."
            )
    raise LayerNotFoundError(
        f"Expected a layer named '{name}' in '{model.name}', found none. "
        f"Layers: {[item.name for item in model.layers][:20]}."
    )


def _insert_after(
    model: keras.Model, after: str, block: Callable[[Any], tuple[Any, list[keras.layers.Layer]]]
) -> tuple[keras.Model, list[str]]:
    _find_top_level(model, after)
    created: list[keras.layers.Layer] = []

    def call_function(item: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
        output = item(*args, **kwargs)
        if item.name == after:
            output, new = block(output)
            created.extend(new)
        return output

    grown = keras.models.clone_model(model, call_function=call_function)
    _copy_weights(model, grown, skip={item.name for item in created})
    return grown, [item.name for item in created]


def _copy_weights(source: keras.Model, target: keras.Model, *, skip: set[str] = frozenset()) -> None:
    for item in source.layers:
        if item.name in skip:
            continue
        if hasattr(item, "get_vocabulary") and not isinstance(item, keras.Model):
            # A lookup layer's vocabulary lives in a table, not in weights (a text backbone).
            target.get_layer(item.name).set_vocabulary(item.get_vocabulary())
        if not item.weights:
            continue
        counterpart = target.get_layer(item.name)
        if isinstance(item, keras.Model) and isinstance(counterpart, keras.Model):
            _copy_weights(item, counterpart)
        else:
            counterpart.set_weights(item.get_weights())


def _widen(model: keras.Model, name: str, units: int) -> tuple[keras.Model, list[str], list[str]]:
    target = _find_top_level(model, name)
    if type(target) not in (keras.layers.Dense, keras.layers.Conv2D):
        raise GrowthError(f"Expected a Dense or Conv2D layer to widen, '{name}' is a {type(target).__name__}.")
    old_units = target.units if isinstance(target, keras.layers.Dense) else target.filters
    if units <= old_units:
        raise GrowthError(f"Expected units > {old_units} to widen '{name}', received {units}.")
    chain, consumer = _per_channel_path(model, target)
    mapping = np.concatenate([np.arange(old_units), np.arange(units - old_units) % old_units])
    counts = np.bincount(mapping, minlength=old_units).astype("float32")
    changed = {item.name for item in chain} | {consumer.name, name}

    def clone_function(item: keras.layers.Layer) -> keras.layers.Layer:
        config = item.get_config()
        if item.name == name:
            config["units" if isinstance(item, keras.layers.Dense) else "filters"] = units
        return item.__class__.from_config(config)

    grown = keras.models.clone_model(model, clone_function=clone_function)
    _copy_weights(model, grown, skip=changed)
    weights = target.get_weights()
    grown.get_layer(name).set_weights([weights[0][..., mapping]] + [w[mapping] for w in weights[1:]])
    for item in chain:
        if not item.weights:
            continue
        values = item.get_weights()
        if isinstance(item, keras.layers.DepthwiseConv2D):
            if item.depth_multiplier != 1:
                raise GrowthError(f"Expected depth_multiplier 1 in '{item.name}', found {item.depth_multiplier}.")
            values = [values[0][:, :, mapping, :]] + [v[mapping] for v in values[1:]]
        else:  # BatchNormalization: gamma, beta, moving mean, moving variance
            values = [v[mapping] for v in values]
        grown.get_layer(item.name).set_weights(values)
    values = consumer.get_weights()
    kernel = values[0]
    if isinstance(consumer, keras.layers.Dense):
        new_kernel = kernel[mapping, :] / counts[mapping][:, None]
    else:
        new_kernel = kernel[:, :, mapping, :] / counts[mapping][None, None, :, None]
    grown.get_layer(consumer.name).set_weights([new_kernel.astype(kernel.dtype)] + values[1:])
    return grown, [], sorted(changed)


def _per_channel_path(
    model: keras.Model, target: keras.layers.Layer
) -> tuple[list[keras.layers.Layer], keras.layers.Layer]:
    nodes = graph_nodes(model)
    current = target
    chain: list[keras.layers.Layer] = []
    while True:
        users = [
            (item, node) for item, node in nodes if any(t._keras_history[0] is current for t in node.input_tensors)
        ]
        if len(users) != 1:
            raise GrowthError(
                f"Expected the output of '{current.name}' to feed exactly one layer to widen '{target.name}', "
                f"it feeds {[item.name for item, _ in users]}. Widening across branches (Add, Concatenate, "
                "several consumers) is not supported; widen a layer inside a plain chain."
            )
        item, node = users[0]
        if type(item) in (keras.layers.Dense, keras.layers.Conv2D):
            return chain, item
        if isinstance(item, PER_CHANNEL_LAYERS):
            if isinstance(item, keras.layers.BatchNormalization) and item.axis not in (
                -1,
                [-1],
                len(node.output_tensors[0].shape) - 1,
                [len(node.output_tensors[0].shape) - 1],
            ):
                raise GrowthError(
                    f"Expected BatchNormalization over the last axis in '{item.name}', found {item.axis}."
                )
            chain.append(item)
            current = item
            continue
        raise GrowthError(
            f"Expected only per-channel layers ({', '.join(c.__name__ for c in PER_CHANNEL_LAYERS)}) between "
            f"'{target.name}' and the next Dense/Conv2D, found '{item.name}' ({type(item).__name__})."
        )
