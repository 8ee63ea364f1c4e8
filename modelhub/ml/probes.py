"""Probe inputs and the closeness check: how every rebuilt model is held against its original.

A head cut from a full model, a branch on its trunk, a grown backbone and an assembled
SavedModel are each run on a few deterministic probe rows (:func:`probe_inputs_for`) beside
the model they replace, and must agree within the one tolerance
(:data:`modelhub.ml.tolerance.VERIFY_TOLERANCE`, checked by :func:`check_close`).

Variable-length inputs (a ``(None, 1)`` audio input, ``(None,)`` token ids) need a length the
model accepts: strided convolutions and pooling refuse rows that are too short. The length comes
from, in order: an explicit ``probe_shape`` (from the request, or the dataset), the shapes set by
:func:`probe_shape_override` around a whole job, or the model itself (:func:`accepted_length`:
the shortest of :data:`CANDIDATE_LENGTHS` that every layer accepts, found by running the layers'
own shape arithmetic on symbolic tensors, without computing anything). When none works the error
names the layer that refuses, never a TensorFlow traceback.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import keras
import numpy as np

from modelhub.ml.errors import HeadExtractionError, ProbeShapeError
from modelhub.ml.inspect import graph_nodes, input_name, iter_leaf_layers
from modelhub.ml.tolerance import VERIFY_TOLERANCE

PROBE_WORDS = ("the", "a", "model", "cat", "runs", "fast", "blue", "data", "under", "zebra", "qux")
# Lengths tried, shortest first, for dimensions the model leaves open (None). 1 comes first, so a
# model that takes any length keeps the probe rows it always had.
CANDIDATE_LENGTHS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
# Then every length up to this, for models that need one exact length (a Reshape after a convolution).
EXHAUSTIVE_UP_TO = 256
# Runs of the model on one row to confirm a length its shape arithmetic accepts.
MAX_CONCRETE_RUNS = 4

ProbeShape = Mapping[str, Sequence[int | None]]
_OVERRIDE: contextvars.ContextVar[dict[str, list[int]] | None] = contextvars.ContextVar("probe_shape", default=None)


@contextlib.contextmanager
def probe_shape_override(probe_shape: ProbeShape | None) -> Iterator[None]:
    """Use ``probe_shape`` ({input name: per-row dims}) for every probe built inside the block.

    A job that checks several models (an import's reference, branches and heads) sets the
    request's ``probe_shape`` once here; inputs it does not name are derived as usual.
    """
    token = _OVERRIDE.set({str(k): list(v) for k, v in (probe_shape or {}).items()} or None)
    try:
        yield
    finally:
        _OVERRIDE.reset(token)


def probe_inputs_for(model: Any, *, num_rows: int = 4, seed: int = 0, probe_shape: ProbeShape | None = None) -> Any:
    """Return deterministic inputs for ``model``: one array, or a dict by input name.

    Floats are standard normal; integer inputs that feed an Embedding stay below its
    ``input_dim`` (other integers are 0 or 1); string inputs are short sentences of
    common words and of words from the model's own vocabulary. Dimensions the model leaves
    open (None) take ``probe_shape``'s, else :func:`probe_shape_override`'s, else
    :func:`accepted_length`.

    Raises:
        ProbeShapeError: ``probe_shape`` does not fit the inputs, or no length is accepted
            (naming the layer that refuses).

    Example:
        >>> probe_inputs_for(text_model)["text"][:1]
        array([['cat the blue']], dtype=object)
    """
    shapes = probe_row_shapes(model, probe_shape=probe_shape)
    arrays = _arrays(model, shapes, num_rows=num_rows, seed=seed)
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    return arrays


def rows_probe_shape(model: Any, x: Any, *, open_only: bool = True) -> dict[str, list[int]]:
    """Return ``{input name: per-row shape}`` of rows ``x`` (one array, or a dict by input name) for ``model``.

    With ``open_only`` only the inputs the model leaves open (a None dimension) are named: a
    dataset's rows give the probe length of a job's checks (``probe_shape`` from the dataset).

    Example:
        >>> rows_probe_shape(token_model, {"token_ids": np.zeros((48, 300), "int32")})
        {'token_ids': [300]}
    """
    names = [input_name(t) for t in model.inputs]
    arrays = dict(x) if isinstance(x, Mapping) else {names[0]: x}
    open_names = {input_name(t) for t in model.inputs if None in tuple(t.shape[1:])}
    return {
        name: [int(d) for d in np.shape(arrays[name])[1:]]
        for name in names
        if name in arrays and (name in open_names or not open_only)
    }


def _arrays(model: Any, shapes: Mapping[str, Sequence[int]], *, num_rows: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    limits = _integer_limits(model)
    vocabulary = _string_vocabulary(model)
    arrays = {}
    for tensor in model.inputs:
        name = input_name(tensor)
        shape = [num_rows, *shapes[name]]
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
    return arrays


def probe_row_shapes(model: Any, *, probe_shape: ProbeShape | None = None) -> dict[str, list[int]]:
    """Return the per-row shape of each input's probe rows, every dimension filled in.

    Explicit ``probe_shape`` first, then :func:`probe_shape_override`'s shapes, then for the
    inputs still open the shortest length :func:`accepted_length` finds (one length for every
    open dimension of every input: token ids and their masks must agree).

    Raises:
        ProbeShapeError: a given shape does not fit an input or is refused by a layer, or no
            length of :data:`CANDIDATE_LENGTHS` is accepted.
    """
    given = {**(_OVERRIDE.get() or {}), **{str(k): list(v) for k, v in (probe_shape or {}).items()}}
    declared = {input_name(t): [None if d is None else int(d) for d in t.shape[1:]] for t in model.inputs}
    shapes: dict[str, list[int | None]] = {}
    for name, dims in declared.items():
        shapes[name] = _fit_given(name, dims, given[name]) if name in given else dims
    if all(d is not None for dims in shapes.values() for d in dims):
        if any(name in given for name in declared):
            failure = symbolic_failure(model, shapes) or concrete_failure(model, shapes)
            if failure:
                raise ProbeShapeError(
                    f"Expected probe_shape {{{_shape_text(shapes)}}} to be accepted by the model, but {failure}. "
                    "Give a shape every layer accepts (longer rows for strided convolutions and pooling)."
                )
        return shapes  # type: ignore[return-value]
    length = accepted_length(model, shapes)
    return {name: [length if d is None else d for d in dims] for name, dims in shapes.items()}


def accepted_length(model: Any, shapes: Mapping[str, Sequence[int | None]]) -> int:
    """Return the first length the model accepts for its open (None) dims.

    Tried in order: :data:`CANDIDATE_LENGTHS` (shortest first), then every other length up to
    :data:`EXHAUSTIVE_UP_TO`.
    A length whose shape arithmetic passes is confirmed by running the model on one row
    (at most :data:`MAX_CONCRETE_RUNS` times).

    Each candidate runs the layers' own shape arithmetic on symbolic tensors (no computation),
    so strides, kernel sizes, dilation and pooling are all accounted for, nested models too.

    Raises:
        ProbeShapeError: no candidate works; names the layer that refuses the longest one and
            says how to give a shape (``probe_shape``).
    """
    failure, failed_at = "", 0
    concrete, concrete_at = "", 0
    runs = 0
    rest = (n for n in range(1, EXHAUSTIVE_UP_TO + 1) if n not in CANDIDATE_LENGTHS)
    for length in (*CANDIDATE_LENGTHS, *rest):
        filled = {name: [length if d is None else d for d in dims] for name, dims in shapes.items()}
        problem = symbolic_failure(model, filled)
        if not problem and runs < MAX_CONCRETE_RUNS:
            # Shape arithmetic passed; some layers (Concatenate, Add) only check agreement when run.
            runs += 1
            if _runs(model, filled):
                return length
            if not concrete:  # the first failure at run time says most: shapes were fine up to it
                concrete, concrete_at = concrete_failure(model, filled), length
        elif problem and length > failed_at:  # else the longest length's reason: the deepest layer reached
            failure, failed_at = problem, length
    if concrete:
        failure, failed_at = concrete, concrete_at
    open_inputs = sorted(name for name, dims in shapes.items() if None in dims)
    example = ", ".join(f'"{name}": {_example(shapes[name])}' for name in open_inputs)
    raise ProbeShapeError(
        f"Expected a length for the open (None) dimensions of input(s) {open_inputs} that model "
        f"'{model.name}' accepts, but none works (every length up to {EXHAUSTIVE_UP_TO}, and powers of two up to "
        f"{CANDIDATE_LENGTHS[-1]}): at length {failed_at}, {failure}. Fix the model, or give the shape "
        f"of one probe row with probe_shape, e.g. {{{example}}}."
    )


def symbolic_failure(model: Any, shapes: Mapping[str, Sequence[int]]) -> str:
    """Run ``model`` on symbolic inputs of ``shapes`` (per row); return "" or why a layer refuses.

    The message names the innermost layer that raised (``outer/inner``), its class and Keras'
    reason, e.g. "layer 'conv_2' (Conv1D) refuses input shape (2, 3, 8): Computed output size
    would be zero or negative ...".
    """
    specs = {}
    for tensor in model.inputs:
        name = input_name(tensor)
        specs[id(tensor)] = keras.KerasTensor((2, *shapes[name]), dtype=tensor.dtype)
    return _trace(model, specs, prefix="") or ""


def concrete_failure(model: Any, shapes: Mapping[str, Sequence[int]]) -> str:
    """Run ``model`` on one probe row of ``shapes``, layer by layer; return "" or why a layer refuses."""
    if _runs(model, shapes):
        return ""
    arrays = _arrays(model, shapes, num_rows=1, seed=0)
    values = {id(t): keras.ops.convert_to_tensor(arrays[input_name(t)]) for t in model.inputs}
    return _trace(model, values, prefix="", concrete=True) or ""


def _runs(model: Any, shapes: Mapping[str, Sequence[int]]) -> bool:
    arrays = _arrays(model, shapes, num_rows=1, seed=0)
    try:
        model(next(iter(arrays.values())) if len(arrays) == 1 else arrays, training=False)
    except Exception:  # noqa: BLE001 - TensorFlow raises many types; concrete_failure names the layer
        return False
    return True


def _trace(model: Any, specs: dict[int, Any], *, prefix: str, concrete: bool = False) -> str | None:
    """Propagate ``specs`` (by id of the model's input tensors) through ``model``'s graph.

    Symbolic tensors go through each layer's shape arithmetic; with ``concrete``, real tensors
    through each layer's call.
    """
    for layer, node in graph_nodes(model):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            args, kwargs = node.arguments.fill_in(specs)
        except KeyError:
            continue  # a node fed by tensors outside this graph: nothing to check
        try:
            outputs = layer(*args, **kwargs) if concrete else layer.compute_output_spec(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - every layer raises its own type; we name it
            inner = _trace_nested(layer, args, prefix=f"{prefix}{layer.name}/", concrete=concrete)
            if inner:
                return inner
            shapes = ", ".join(str(tuple(t.shape)) for t in keras.tree.flatten(args) if hasattr(t, "shape"))
            reason = _reason(error)
            return f"layer '{prefix}{layer.name}' ({type(layer).__name__}) refuses input shape {shapes}: {reason}"
        for tensor, spec in zip(node.output_tensors, keras.tree.flatten(outputs), strict=False):
            specs[id(tensor)] = spec
    return None


def _reason(error: Exception) -> str:
    """Keras' or TensorFlow's reason in one line, without the op's internal name and call context."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(error)).split())
    text = text.replace("Exception encountered when calling", "in")
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    text = re.sub(r"\s*\[Op:[^\]]*\]", "", text)
    text = text.split(" Arguments received by")[0]
    return text[:300].rstrip(". ")


def _trace_nested(layer: Any, args: tuple, *, prefix: str, concrete: bool = False) -> str | None:
    """For a nested functional model that refused, find the layer inside it that refuses."""
    inputs = getattr(layer, "inputs", None)
    if not isinstance(layer, keras.Model) or not inputs or not args:
        return None
    try:
        given = keras.tree.flatten(args[0])
        wanted = keras.tree.flatten(layer._inputs_struct)  # noqa: SLF001 - the order Keras flattens inputs in
    except Exception:  # noqa: BLE001 - not a functional model
        return None
    if len(given) != len(wanted):
        return None
    specs = {id(t): spec for t, spec in zip(wanted, given, strict=True)}
    return _trace(layer, specs, prefix=prefix, concrete=concrete)


def _fit_given(name: str, declared: list[int | None], given: Sequence[Any]) -> list[int]:
    ok = (
        isinstance(given, (list, tuple))
        and len(given) == len(declared)
        and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in given)
        and all(want is None or want == got for want, got in zip(declared, given, strict=False))
    )
    if not ok:
        raise ProbeShapeError(
            f"Expected probe_shape['{name}'] to be the shape of one row of input '{name}', "
            f"{_example(declared)} (positive integers, the fixed dimensions as declared {declared}), "
            f"received {list(given) if isinstance(given, (list, tuple)) else given!r}."
        )
    return [int(d) for d in given]


def _example(dims: Sequence[int | None]) -> list[int]:
    return [16000 if d is None else int(d) for d in dims]


def _shape_text(shapes: Mapping[str, Sequence[int | None]]) -> str:
    return ", ".join(f'"{name}": {list(dims)}' for name, dims in shapes.items())


def _integer_limits(model: Any) -> dict[str, int]:
    """Map integer input names to the input_dim of the first Embedding they reach."""
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
    for layer in iter_leaf_layers(model):
        if hasattr(layer, "get_vocabulary"):
            try:
                words = [str(w) for w in layer.get_vocabulary() if isinstance(w, str) and w and not w.startswith("[")]
            except Exception:  # noqa: BLE001 - a layer without a vocabulary yet
                continue
            if words:
                return words
    return []


def check_close(expected: np.ndarray, got: np.ndarray, *, what: str, error=HeadExtractionError, rtol=VERIFY_TOLERANCE):
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
