"""The request field ``probe_shape``: the shape of one probe row per input of open (None) length.

Why: checks run a model on a few probe rows (modelhub.ml.probes). A variable-length input (audio
samples, token ids) needs a length every layer accepts; the worker derives one from the model,
and a request may name it instead, e.g. ``{"audio": [16000, 1]}``. This module checks the field
on the web side (no model is opened here); the worker checks it against the model.
"""

from core.errors import ValidationError
from core.json_bounded import json_loads_bounded

MAX_PROBE_ROW_VALUES = 2**22  # 4M values (16 MB of float32) per probe row
PROBE_SHAPE_EXAMPLE = '{"audio": [16000, 1]}'


def probe_shape_parse(raw, *, field: str = "probe_shape") -> dict[str, list[int]]:
    """Return ``{input name: [dims]}`` from a mapping or its JSON; {} when not given.

    Raises:
        ValidationError: naming the field, what was expected and what was received.
    """
    if raw in (None, "", {}):
        return {}
    problem = ""
    try:
        value = json_loads_bounded(raw, max_depth=2, what="a JSON object") if isinstance(raw, str) else raw
    except ValidationError as exc:  # not JSON, or nested deeper than {name: [dims]}
        value, problem = None, exc.message[0].lower() + exc.message[1:].rstrip(".")
    problem = problem or _problem(value)
    if problem:
        received = repr(raw) if len(repr(raw)) <= 200 else repr(raw)[:200] + "…"
        message = (
            f"Expected {field} as {{input name: shape of one row}}, e.g. {PROBE_SHAPE_EXAMPLE} (positive integers, "
            f"at most {MAX_PROBE_ROW_VALUES:,} values a row); {problem}, received {received}."
        )
        raise ValidationError(message, detail={field: [message]})
    return {name: [int(d) for d in dims] for name, dims in value.items()}


def _problem(value) -> str:
    if not isinstance(value, dict):
        return "it is not a JSON object"
    for name, dims in value.items():
        if not name:
            return "an input name is empty"
        if not isinstance(dims, list) or not dims or len(dims) > 8:
            return f"'{name}' is not a list of 1 to 8 dimensions"
        if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
            return f"'{name}' has a dimension that is not a positive integer"
        total = 1
        for d in dims:
            total *= d
        if total > MAX_PROBE_ROW_VALUES:
            return f"'{name}' asks for {total:,} values a row"
    return ""
