"""One way to parse JSON taken from a request field or a data file: its depth checked first.

Why: the middleware's deep-JSON guard covers JSON request bodies only. JSON that arrives inside
a multipart form field (`columns`, `probe_shape`, `tasks`), a token or a line of a dataset is
parsed by ``json.loads``, whose C decoder recurses once per ``[``/``{``: 5,000 brackets raise
RecursionError (a 500, or a crashed task), and a few hundred give a nesting no caller expects.
:func:`json_loads_bounded` measures the nesting first, in time linear in the text and without
recursion, and turns every failure into a ValidationError (a 400) saying what was expected.

It lives in core so the web side and the worker side both use it (core imports no app and no
TensorFlow). The ML library (modelhub.ml, no Django) keeps its own scanner with the same rule:
modelhub.ml.untrusted.config.json_nesting_depth.
"""

from __future__ import annotations

import json
import re
from typing import Any

from core.errors import ValidationError

# A JSON string, possessive so it can never fail once started: an unterminated string runs to the
# end of the text (``\Z``). A pattern that could fail would make re.sub retry from every later
# quote, which is quadratic in the text (``"\"\"\"…`` of 40 KB took seconds).
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(code for code in range(256) if code not in b"[]{}")
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_CHUNK = 1024**2


def json_nesting_depth(text: str | bytes) -> int:
    """Return the deepest nesting of ``[`` and ``{`` in JSON text, without parsing it.

    Strings are blanked out first, so brackets inside them do not count. Linear in the text
    and without recursion; memory is the text once more plus a small chunk.

    Example:
        >>> json_nesting_depth('{"a": [1, {"b": "[["}]}'), json_nesting_depth('"\\\\"[[')
        (3, 0)
    """
    import numpy as np

    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    brackets = _STRING.sub(b'""', raw).translate(None, _NOT_BRACKETS).translate(_STEPS)
    level, deepest = 0, 0
    for start in range(0, len(brackets), _CHUNK):
        steps = np.frombuffer(brackets, dtype=np.int8, count=min(_CHUNK, len(brackets) - start), offset=start)
        levels = np.cumsum(steps, dtype=np.int64) + level
        deepest = max(deepest, int(levels.max()))
        level = int(levels[-1])
    return deepest


def json_loads_bounded(text: str | bytes, *, max_depth: int, what: str) -> Any:
    """Parse JSON from a request field or a data file, refusing it when nested deeper than `max_depth`.

    Args:
        text: the JSON text (str, or UTF-8 bytes).
        max_depth: the deepest nesting of lists and objects accepted (``[1, 2]`` is 1 deep).
        what: what the text should be, as the message says it: "Expected {what}, found ...",
            e.g. "'columns' as a JSON object" or "a JSON object".

    Raises:
        ValidationError: too deep, or not JSON; never RecursionError.

    Example:
        >>> json_loads_bounded('{"a": [1]}', max_depth=2, what="'columns' as a JSON object")
        {'a': [1]}
    """
    depth = json_nesting_depth(text)
    if depth > max_depth:
        raise ValidationError(f"Expected {what} nested at most {max_depth} levels deep, found {depth} levels.")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ValidationError(f"Expected {what}, found invalid JSON ({exc}).") from None
