"""An assembly's inputs, as its manifest lists them, and the checks of a trial prediction's values.

The web side checks input names, shapes and dtypes with NumPy against the manifest (no
TensorFlow); assemblies.services stores and queues the prediction, and assemblies.work.predicting
(a worker) calls the SavedModel with every backbone input by its serving name, plus task_id.
"""

import json

import numpy as np

from assemblies.models import Assembly
from core.errors import ValidationError

MAX_ROWS = 256
SINGLE_INPUT_NAME = "inputs"
TASK_ID_NAME = "task_id"
EXAMPLE_TEXTS = ("a great movie", "not good at all")
MAX_HINT_VALUES = 16


def manifest_inputs(manifest: dict) -> list[dict]:
    """Return the backbone inputs of an assembly manifest, old or new, as [{"name", "shape", "dtype"}].

    Names are the serving names ("inputs" for a single input) and shapes start with the batch
    dimension (None). Manifests written before several inputs existed only have
    backbone.input; a manifest without either (a build in progress) gives [].

    Example:
        >>> manifest_inputs({"backbone": {"input": {"name": "inputs", "shape": [None, 8], "dtype": "float32"}}})
        [{'name': 'inputs', 'shape': [None, 8], 'dtype': 'float32'}]
    """
    backbone = (manifest or {}).get("backbone") or {}
    entries = backbone.get("inputs") or ([backbone["input"]] if backbone.get("input") else [])
    specs = [{"name": e.get("name"), "shape": list(e["shape"]), "dtype": e["dtype"]} for e in entries]
    if len(specs) == 1:
        specs[0]["name"] = SINGLE_INPUT_NAME
    return specs


def dtype_kind(dtype: str) -> str:
    """Return "string", "int", "bool" or "float" for a manifest dtype such as "int32"."""
    if dtype in ("string", "bool"):
        return dtype
    if dtype.startswith(("int", "uint")):
        return "int"
    return "float"


def numpy_dtype(dtype: str) -> np.dtype:
    """Return the NumPy dtype that carries a numeric manifest dtype here (bfloat16 becomes float32)."""
    try:
        return np.dtype(dtype)
    except TypeError:
        return np.dtype("float32")


def describe_input(spec: dict, *, with_name: bool = True) -> str:
    """Describe an input for people: "'token_ids' int32 [rows, 12]" (without the name: "int32 [rows, 12]")."""
    dims = ["rows", *("any" if dim is None else str(dim) for dim in spec["shape"][1:])]
    text = f"{spec['dtype']} [{', '.join(dims)}]"
    return f"'{spec['name']}' {text}" if with_name else text


def example_dims(spec: dict) -> list[int]:
    """Return the shape of one example of an input, a dimension of any size counted as 1."""
    return [1 if dim is None else int(dim) for dim in spec["shape"][1:]]


def example_row(spec: dict, *, max_values: int, row: int = 0):
    """Return one example of an input as JSON values (zeros or a short text), None when it is larger."""
    shape = example_dims(spec)
    if int(np.prod(shape)) > max_values:
        return None
    leaf = {"string": EXAMPLE_TEXTS[row % len(EXAMPLE_TEXTS)], "int": 0, "bool": False, "float": 0.0}[
        dtype_kind(spec["dtype"])
    ]

    def fill(dims: list[int]):
        return leaf if not dims else [fill(dims[1:]) for _ in range(dims[0])]

    return fill(shape)


def request_example(specs: list[dict]) -> str | None:
    """Return a small JSON body for the predict endpoint, or None when an input is too large to show."""
    rows = {spec["name"]: example_row(spec, max_values=MAX_HINT_VALUES) for spec in specs}
    if any(row is None for row in rows.values()):
        return None
    inputs = [rows[specs[0]["name"]]] if len(specs) == 1 else {name: [row] for name, row in rows.items()}
    return json.dumps({"task_id": 0, "inputs": inputs})


def resolve_task(assembly: Assembly, *, task: str | None, task_id: int | None) -> dict:
    """Return the manifest entry chosen by task slug or task_id, or raise ValidationError."""
    heads = assembly.manifest.get("heads", [])
    for entry in heads:
        if (task is not None and entry["task"] == task) or (task is None and entry["task_id"] == task_id):
            return entry
    choices = ", ".join(f"{e['task_id']}={e['task']}" for e in heads)
    asked = f"task {task!r}" if task is not None else f"task_id {task_id}"
    raise ValidationError(f"Unknown {asked} for assembly {assembly.pk}. Valid tasks: {choices}.")


def coerce_inputs(assembly: Assembly, inputs) -> list | dict:
    """Check `inputs` against the backbone inputs of the manifest; add the batch axis to one example.

    One input: a nested list (or array). Several inputs: a dict by input name, every input
    present, the same number of rows in each. Return a nested list for one input, a dict of
    nested lists by name for several. Raise ValidationError (detail: the expected inputs).
    """
    specs = manifest_inputs(assembly.manifest)
    if not specs:
        raise ValidationError(f"Assembly {assembly.pk} has no input description in its manifest; rebuild it.")
    several = len(specs) > 1
    try:
        by_name = _inputs_by_name(specs, inputs)
        coerced = {
            spec["name"]: _coerce_input(spec, by_name[spec["name"]], label=_label(spec, several=several))
            for spec in specs
        }
        num_rows = {name: len(rows) for name, rows in coerced.items()}
        if len(set(num_rows.values())) > 1:
            counts = ", ".join(f"'{name}' {count}" for name, count in num_rows.items())
            raise ValidationError(
                f"The inputs have different numbers of rows: {counts}. Send the same number of rows "
                "(one per example) in every input."
            )
        rows = next(iter(num_rows.values()))
        if not 1 <= rows <= MAX_ROWS:
            raise ValidationError(f"Send between 1 and {MAX_ROWS} rows; received {rows}.")
    except ValidationError as exc:
        exc.detail = exc.detail or {"expected_inputs": specs}
        raise
    return coerced if several else coerced[SINGLE_INPUT_NAME]


def _label(spec: dict, *, several: bool) -> str:
    return f"Input '{spec['name']}'" if several else "'inputs'"


def _json_type(value) -> str:
    """Name a value's type as JSON would: "an object", "a list", "a string", "a number", …"""
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple | np.ndarray):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool | np.bool_):
        return "a boolean"
    if isinstance(value, int | float | np.number):
        return "a number"
    return f"a {type(value).__name__}"


def _inputs_by_name(specs: list[dict], inputs) -> dict:
    """Return the raw value of each input by serving name, after checking the names."""
    expected = ", ".join(describe_input(spec) for spec in specs)
    example = request_example(specs)
    send = f" Send e.g. {example}." if example else ""
    if len(specs) == 1:
        if isinstance(inputs, dict):
            raise ValidationError(
                f"This backbone takes one input, {expected}, so 'inputs' must be a nested list, not an object "
                f"(keys {sorted(map(str, inputs))}).{send}"
            )
        return {SINGLE_INPUT_NAME: inputs}
    names = [spec["name"] for spec in specs]
    if not isinstance(inputs, dict):
        raise ValidationError(
            f"This backbone takes {len(specs)} inputs, so 'inputs' must be an object by input name: {expected}; "
            f"received {_json_type(inputs)}.{send}"
        )
    missing = [name for name in names if name not in inputs]
    unknown = [str(name) for name in inputs if name not in names]
    if missing or unknown:
        problems = []
        if missing:
            problems.append(f"is missing {', '.join(repr(n) for n in missing)}")
        if unknown:
            problems.append(f"has unknown name{'s' if len(unknown) > 1 else ''} {', '.join(repr(n) for n in unknown)}")
        task_hint = (
            " Give the task next to 'inputs' (as 'task' or 'task_id'), not inside it."
            if {TASK_ID_NAME, "task"} & set(unknown)
            else ""
        )
        raise ValidationError(
            f"'inputs' {' and '.join(problems)}. Expected every backbone input by name: {expected}.{task_hint}"
        )
    return inputs


def _coerce_input(spec: dict, value, *, label: str) -> list:
    """Check one input's values and shape; return it as a nested list with the batch axis."""
    kind = dtype_kind(spec["dtype"])
    if kind == "string":
        value = value.tolist() if isinstance(value, np.ndarray) else value
        shape = _nested_shape(value, spec, label=label)
    else:
        value = _numeric_array(value, spec, label=label)
        shape = list(value.shape)
    if _is_one_example(shape, spec, label=label):
        value = [value] if kind == "string" else value[None, ...]
    return value if kind == "string" else value.tolist()


def _is_one_example(shape: list[int], spec: dict, *, label: str) -> bool:
    """Return True for one example, False for a batch; raise for any other shape."""
    wanted = list(spec["shape"][1:])

    def fits(candidate: list[int]) -> bool:
        if len(candidate) != len(wanted):
            return False
        return all(w is None or w == c for w, c in zip(wanted, candidate, strict=True))

    if fits(shape):
        return True
    if len(shape) == len(wanted) + 1 and fits(shape[1:]):
        return False
    if dtype_kind(spec["dtype"]) == "string" and wanted == [1] and len(shape) == 1:
        hint = ' Wrap each string in its own list: [["great movie"], ["bad"]].'
    else:
        row = example_row(spec, max_values=MAX_HINT_VALUES)
        hint = f" One example looks like {json.dumps(row)}." if row is not None else ""
    batch = ", ".join(["rows", *map(str, wanted)])
    raise ValidationError(
        f"{label} has shape {shape}; expected one example of shape {wanted} or a batch [{batch}] "
        f"(the backbone input {describe_input(spec)}).{hint}"
    )


def _short(value) -> str:
    text = json.dumps(value) if isinstance(value, str | int | float | bool | type(None)) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _nested_shape(value, spec: dict, *, label: str) -> list[int]:
    """Return the shape of a rectangular nested list; raise on ragged rows or a leaf of the wrong type."""
    kind = dtype_kind(spec["dtype"])
    wanted = {"string": "strings", "bool": "true/false values"}.get(kind, "numbers")
    fix = {
        "string": 'Quote every value, e.g. [["great movie"], ["bad"]].',
        "bool": "Send true or false.",
        "int": "Send integers without quotes.",
        "float": "Send numbers without quotes.",
    }[kind]

    def accepts(leaf) -> bool:
        if kind == "string":
            return isinstance(leaf, str)
        if kind == "bool":
            return isinstance(leaf, bool | np.bool_)
        return isinstance(leaf, int | float | np.integer | np.floating) and not isinstance(leaf, bool | np.bool_)

    def walk(item, path: str) -> list[int]:
        if isinstance(item, np.ndarray):
            item = item.tolist()
        if isinstance(item, list | tuple):
            shapes = [walk(child, f"{path}[{index}]") for index, child in enumerate(item)]
            for index, child_shape in enumerate(shapes):
                if child_shape != shapes[0]:
                    raise ValidationError(
                        f"{label} is ragged: {path}[0] has shape {shapes[0]} but {path}[{index}] has shape "
                        f"{child_shape}. Expected a rectangular nested list for {describe_input(spec)}; pad "
                        "the rows to one length or send them separately."
                    )
            return [len(item), *(shapes[0] if shapes else [])]
        if not accepts(item):
            found = "null" if item is None else f"{_short(item)} ({_json_type(item)})"
            expected = describe_input(spec, with_name=False)
            raise ValidationError(f"{label} must hold only {wanted} ({expected}); found {found} at {path}. {fix}")
        return []

    return walk(value, spec["name"])


def _numeric_array(value, spec: dict, *, label: str) -> np.ndarray:
    """Return the values as an array of the input's dtype; raise on text, ragged rows, NaN or out-of-range."""
    dtype, kind = spec["dtype"], dtype_kind(spec["dtype"])
    allowed = "b" if kind == "bool" else "iuf"
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        array = None
    if array is None or array.dtype.kind not in allowed:
        _nested_shape(value, spec, label=label)  # names the ragged row or the wrong value
        raise ValidationError(
            f"{label} holds a number beyond the 64-bit range; {describe_input(spec)} needs numbers that fit {dtype}."
        )
    target = np.dtype(bool) if kind == "bool" else numpy_dtype(dtype)
    if kind == "int":
        if array.dtype.kind == "f":
            if not np.all(np.isfinite(array)):
                raise ValidationError(f"{label} contains NaN or infinity; {describe_input(spec)} takes integers.")
            fractional = array[array != np.round(array)]
            if fractional.size:
                raise ValidationError(
                    f"{label} is {dtype} and takes whole numbers; received {fractional.flat[0].item()!r}. "
                    "Send integers (token ids, category ids, …) without a fractional part."
                )
        limits = np.iinfo(target)
        outside = array[(array < limits.min) | (array > limits.max)]
        if outside.size:
            raise ValidationError(
                f"{label} holds {int(outside.flat[0])}, outside the {dtype} range [{limits.min}, {limits.max}]. "
                f"Send values that fit {dtype}."
            )
    with np.errstate(over="ignore", invalid="ignore"):
        array = array.astype(target)
    if kind == "float" and not np.all(np.isfinite(array)):
        raise ValidationError(
            f"{label} contains NaN or infinity (or a number too large for {dtype}). Send finite numbers."
        )
    return array
