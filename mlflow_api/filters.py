"""The small part of MLflow's search filter grammar that ModelHub answers, and paging.

Clauses joined by AND: ``name = 'x'``, ``name != 'x'``, ``name LIKE 'pat%'``, ``name ILIKE 'pat%'``
and ``tags.<key> = | != | LIKE 'value'`` (the key may be back-quoted, as MLflow 3 writes
``tags.`mlflow.prompt.is_prompt` != 'true'`` into every search_registered_models call). A
missing tag compares as NULL, as MLflow's SQL store does: ``!=`` matches, ``=`` does not.
Anything else is INVALID_PARAMETER_VALUE saying what is supported.
"""

import base64
import json
import re
from collections.abc import Callable

from core.errors import ValidationError

INVALID = "INVALID_PARAMETER_VALUE"
_CLAUSE = re.compile(
    r"""^\s*(?P<key>name|tags\.(?:`[^`]+`|[\w.\-]+)|tag\.(?:`[^`]+`|[\w.\-]+))\s*"""
    r"""(?P<op>=|!=|LIKE|ILIKE)\s*(?P<value>'[^']*'|"[^"]*")\s*$""",
    re.IGNORECASE,
)
_AND = re.compile(r"\s+AND\s+", re.IGNORECASE)
SUPPORTED = (
    "name = 'x', name != 'x', name LIKE 'x%', name ILIKE 'x%', tags.<key> = 'v' and tags.<key> != 'v', joined by AND"
)


def _like(pattern: str, *, case: bool) -> re.Pattern:
    body = "".join(".*" if char == "%" else "." if char == "_" else re.escape(char) for char in pattern)
    return re.compile(f"^{body}$", 0 if case else re.IGNORECASE | re.DOTALL)


def parse_filter(text: str | None) -> Callable[[str, dict], bool]:
    """Return match(name, tags) for an MLflow filter string (empty: everything matches)."""
    tests = []
    for clause in _AND.split(text.strip()) if text and text.strip() else []:
        found = _CLAUSE.match(clause)
        if found is None:
            raise ValidationError(
                f"Unsupported filter clause {clause!r}: ModelHub's MLflow registry understands {SUPPORTED}.",
                code=INVALID,
            )
        key, op, value = found["key"], found["op"].upper(), found["value"][1:-1]
        tag = None if key.lower() == "name" else key.split(".", 1)[1].strip("`")
        tests.append((tag, op, value))

    def match(name: str, tags: dict) -> bool:
        for tag, op, value in tests:
            actual = name if tag is None else tags.get(tag)
            if op == "!=":
                ok = actual != value
            elif actual is None:
                ok = False
            elif op == "=":
                ok = actual == value
            else:
                ok = bool(_like(value, case=op == "LIKE").match(actual))
            if not ok:
                return False
        return True

    return match


def max_results(raw, *, default: int, ceiling: int) -> int:
    """Return the page size asked for (1..ceiling), else INVALID_PARAMETER_VALUE."""
    if raw in (None, ""):
        return min(default, ceiling)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        value = 0
    if value < 1:
        raise ValidationError(f"max_results must be a positive integer, received {raw!r}.", code=INVALID)
    return min(value, ceiling)


def page_offset(token: str | None) -> int:
    """Return the offset a page token stands for (0 for none), else INVALID_PARAMETER_VALUE."""
    if not token:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()).decode())["offset"]
        if isinstance(offset, int) and offset >= 0:
            return offset
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        pass
    raise ValidationError(
        f"Invalid page_token {token!r}: pass the next_page_token of the previous page unchanged.", code=INVALID
    )


def page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def paged(items: list, *, offset: int, size: int) -> tuple[list, str]:
    """Return (this page, next page token or "")."""
    page = items[offset : offset + size]
    return page, page_token(offset + size) if offset + size < len(items) else ""
