"""Heads made of Dense layers, as plain arrays: described, packed and read without Keras.

Most heads are a chain of Dense layers (with activations and dropout) on the backbone's
features. An assembly stacks such heads into ``[num_heads, ...]`` variables, so it only
needs their weights, not the Keras models. Deserialising 10,000 ``.keras`` files costs
far more than reading their bytes, so a head's weights are packed once (when the head is
validated, imported or trained) into a small binary file, and the assembly reads those.

The packed format is ``MAGIC``, a 4-byte little-endian header length, a JSON header
(``{"format", "steps", "input_width", "arrays": [{"shape", "offset", "nbytes"}]}``)
and the float32 arrays, little-endian, one after another. Nothing in it is executed.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from modelhub.ml.errors import InvalidModelFileError
from modelhub.ml.inspect import graph_nodes

FORMAT = "modelhub-dense-chain/1"
MAGIC = b"MHDENSE1"
MAX_HEADER_BYTES = 1024 * 1024
STACKABLE_ACTIVATIONS = frozenset(
    {"linear", "relu", "relu6", "softmax", "sigmoid", "tanh", "gelu", "elu", "selu", "softplus", "silu", "swish"}
)

# One step of a chain: ("dense", units, use_bias, activation) or ("activation", name).
Step = tuple


@dataclass(frozen=True)
class DenseChain:
    """A head that is a chain of Dense/Activation steps, with its weights as arrays.

    Attributes:
        steps: the chain, e.g. ``(("dense", 10, True, "softmax"),)``.
        input_width: the width of the features it takes.
        kernels: one float32 ``[in, out]`` array per Dense step.
        biases: one float32 ``[out]`` array (or None without bias) per Dense step.
    """

    steps: tuple[Step, ...]
    input_width: int
    kernels: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray | None, ...]

    @property
    def width(self) -> int:
        """The output width."""
        return steps_width(self.steps)

    def apply(self, features: np.ndarray) -> np.ndarray:
        """Compute the head on ``features`` ``[rows, input_width]`` with NumPy (the reference).

        Matrix products run in float64 and the activations in Keras on float32 values, so
        the result does not share code with the assembled graph's stacked kernels.
        """
        hidden = np.asarray(features, np.float64)
        dense_index = 0
        for step in self.steps:
            if step[0] == "dense":
                hidden = hidden @ self.kernels[dense_index].astype(np.float64)
                if self.biases[dense_index] is not None:
                    hidden = hidden + self.biases[dense_index]
                hidden = _numpy_activation(step[3], hidden)
                dense_index += 1
            else:
                hidden = _numpy_activation(step[1], hidden)
        return hidden.astype(np.float32)


@dataclass(frozen=True)
class PackedDenseHead:
    """A Dense-chain head known by its steps, whose weights are read only when needed.

    Attributes:
        steps: the chain's steps (they decide which heads are stacked together).
        input_width: the width of the features it takes.
        load: returns the :class:`DenseChain` (e.g. reads the packed bytes from a store).
    """

    steps: tuple[Step, ...]
    input_width: int
    load: Callable[[], DenseChain]

    @property
    def width(self) -> int:
        return steps_width(self.steps)


def steps_width(steps: tuple[Step, ...] | list[Step]) -> int:
    """Return the output width of a chain description."""
    return [step for step in steps if step[0] == "dense"][-1][1]


def dense_chain_steps(model: keras.Model) -> tuple[Step, ...] | None:
    """Describe ``model`` as a chain of Dense/Activation steps, or None if it is not one.

    A chain takes one ``[batch, width]`` input, and each layer takes the previous
    layer's output: Dense (float32, no LoRA, a named activation), Activation, Dropout.
    """
    if len(model.inputs) != 1 or len(model.outputs) != 1 or len(model.inputs[0].shape) != 2:
        return None
    if model.inputs[0].shape[1] is None:
        return None
    nodes = [(layer, node) for layer, node in graph_nodes(model) if not isinstance(layer, keras.layers.InputLayer)]
    previous = model.inputs[0]
    steps: list[Step] = []
    for layer, node in nodes:
        if len(node.input_tensors) != 1 or node.input_tensors[0] is not previous:
            return None
        previous = node.output_tensors[0]
        if isinstance(layer, keras.layers.Dense):
            activation = keras.activations.serialize(layer.activation)
            if not isinstance(activation, str) or activation not in STACKABLE_ACTIVATIONS:
                return None
            if str(layer.kernel.dtype) != "float32" or getattr(layer, "lora_enabled", False):
                return None
            steps.append(("dense", int(layer.units), bool(layer.use_bias), activation))
        elif isinstance(layer, keras.layers.Activation):
            activation = keras.activations.serialize(layer.activation)
            if not isinstance(activation, str) or activation not in STACKABLE_ACTIVATIONS:
                return None
            steps.append(("activation", activation))
        elif isinstance(layer, keras.layers.Dropout):
            continue
        else:
            return None
    if previous is not model.outputs[0] or not any(step[0] == "dense" for step in steps):
        return None
    return tuple(steps)


def dense_chain_of(model: keras.Model) -> DenseChain | None:
    """Return the model's weights as a :class:`DenseChain`, or None when it is not a chain."""
    steps = dense_chain_steps(model)
    if steps is None:
        return None
    layers = [layer for layer, _ in graph_nodes(model) if isinstance(layer, keras.layers.Dense)]
    kernels = tuple(np.ascontiguousarray(keras.ops.convert_to_numpy(layer.kernel), np.float32) for layer in layers)
    biases = tuple(
        np.ascontiguousarray(keras.ops.convert_to_numpy(layer.bias), np.float32) if layer.use_bias else None
        for layer in layers
    )
    return DenseChain(steps=steps, input_width=int(model.inputs[0].shape[1]), kernels=kernels, biases=biases)


def pack(chain: DenseChain) -> bytes:
    """Serialise a chain to the packed format (see the module docstring)."""
    arrays = [array for pair in zip(chain.kernels, chain.biases, strict=True) for array in pair if array is not None]
    entries, offset = [], 0
    for array in arrays:
        entries.append({"shape": list(array.shape), "offset": offset, "nbytes": int(array.nbytes)})
        offset += int(array.nbytes)
    header = json.dumps(
        {
            "format": FORMAT,
            "steps": [list(step) for step in chain.steps],
            "input_width": chain.input_width,
            "arrays": entries,
        },
        separators=(",", ":"),
    ).encode()
    body = b"".join(np.ascontiguousarray(array, "<f4").tobytes() for array in arrays)
    return MAGIC + struct.pack("<I", len(header)) + header + body


def unpack(data: bytes, *, what: str = "packed head weights") -> DenseChain:
    """Read a chain from the packed format, checking every size against the header.

    Raises:
        InvalidModelFileError: not the packed format, or sizes that do not add up.
    """
    header, body = _split(data, what)
    steps = tuple(_step(step, what) for step in header.get("steps", []))
    if not steps or not any(step[0] == "dense" for step in steps):
        raise InvalidModelFileError(f"Expected {what} with at least one Dense step, received {header.get('steps')}.")
    arrays = []
    for entry in header.get("arrays", []):
        start, size = int(entry["offset"]), int(entry["nbytes"])
        shape = tuple(int(d) for d in entry["shape"])
        if start < 0 or start + size > len(body) or size != 4 * int(np.prod(shape)):
            raise InvalidModelFileError(f"Expected {what} whose arrays fit the file; array {entry} does not.")
        arrays.append(np.frombuffer(body, "<f4", count=size // 4, offset=start).reshape(shape))
    kernels: list[np.ndarray] = []
    biases: list[np.ndarray | None] = []
    width = int(header.get("input_width", 0))
    position = 0
    for step in steps:
        if step[0] != "dense":
            continue
        if position >= len(arrays) or arrays[position].shape != (width, step[1]):
            raise InvalidModelFileError(f"Expected a [{width}, {step[1]}] kernel in {what}, the arrays do not match.")
        kernels.append(arrays[position])
        position += 1
        if step[2]:
            if position >= len(arrays) or arrays[position].shape != (step[1],):
                raise InvalidModelFileError(f"Expected a [{step[1]}] bias in {what}, the arrays do not match.")
            biases.append(arrays[position])
            position += 1
        else:
            biases.append(None)
        width = step[1]
    if position != len(arrays):
        raise InvalidModelFileError(f"Expected {position} arrays in {what}, received {len(arrays)}.")
    return DenseChain(steps=steps, input_width=int(header["input_width"]), kernels=tuple(kernels), biases=tuple(biases))


def unpack_steps(data: bytes, *, what: str = "packed head weights") -> tuple[tuple[Step, ...], int]:
    """Return ``(steps, input_width)`` from a packed file's header, without reading its arrays."""
    header, _ = _split(data, what)
    return tuple(_step(step, what) for step in header.get("steps", [])), int(header.get("input_width", 0))


def _split(data: bytes, what: str) -> tuple[dict, memoryview]:
    view = memoryview(data)
    if len(view) < len(MAGIC) + 4 or bytes(view[: len(MAGIC)]) != MAGIC:
        raise InvalidModelFileError(f"Expected {what} starting with {MAGIC!r}; this file is something else.")
    (length,) = struct.unpack("<I", view[len(MAGIC) : len(MAGIC) + 4])
    start = len(MAGIC) + 4
    if length > MAX_HEADER_BYTES or start + length > len(view):
        raise InvalidModelFileError(f"Expected {what} with a header of at most {MAX_HEADER_BYTES} bytes in the file.")
    try:
        header = json.loads(bytes(view[start : start + length]))
    except ValueError as error:
        raise InvalidModelFileError(f"Expected a JSON header in {what}: {error}.") from error
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise InvalidModelFileError(f"Expected {what} in format '{FORMAT}'.")
    return header, view[start + length :]


def _step(raw, what: str) -> Step:
    if isinstance(raw, list) and len(raw) == 4 and raw[0] == "dense" and raw[3] in STACKABLE_ACTIVATIONS:
        if isinstance(raw[1], int) and raw[1] > 0 and isinstance(raw[2], bool):
            return ("dense", raw[1], raw[2], raw[3])
    if isinstance(raw, list) and len(raw) == 2 and raw[0] == "activation" and raw[1] in STACKABLE_ACTIVATIONS:
        return ("activation", raw[1])
    raise InvalidModelFileError(f"Expected Dense or Activation steps in {what}, received {raw!r}.")


def _softmax(x: np.ndarray) -> np.ndarray:
    shifted = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return shifted / np.sum(shifted, axis=-1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


# Keras's definitions, in NumPy (float64): no TensorFlow call per head in a reference of 10,000.
SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805
NUMPY_ACTIVATIONS = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    "softmax": _softmax,
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "selu": lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0.0))),
    "softplus": lambda x: np.logaddexp(0.0, x),
    "silu": lambda x: x * _sigmoid(x),
    "swish": lambda x: x * _sigmoid(x),
}


def _numpy_activation(name: str, values: np.ndarray) -> np.ndarray:
    function = NUMPY_ACTIVATIONS.get(name)
    if function is not None:
        return function(values)
    # gelu (erf-based in Keras 3): computed by Keras on float32 values.
    return np.asarray(keras.activations.get(name)(values.astype(np.float32)), np.float64)
