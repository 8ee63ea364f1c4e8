"""The small part of MLflow's search filter grammar that ModelHub answers, and paging.

Clauses joined by AND: ``name = 'x'``, ``name != 'x'``, ``name LIKE 'pat%'``, ``name ILIKE 'pat%'``
and ``tags.<key> = | != | LIKE 'value'`` (the key may be back-quoted, as MLflow 3 writes
``tags.`mlflow.prompt.is_prompt` != 'true'`` into every search_registered_models call). A
missing tag compares as NULL, as MLflow's SQL store does: ``!=`` matches, ``=`` does not.
Anything else is INVALID_PARAMETER_VALUE saying what is supported.
"""

import base64
import itertools
import json
import re
from collections.abc import Iterable

from core.errors import ValidationError
from core.json_bounded import json_loads_bounded

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


# A filter longer than this is refused before it is parsed (MLflow's clients send a few clauses).
MAX_FILTER_CHARS = 1000


def like_match(pattern: str, text: str, *, case: bool = True) -> bool:
    """Whether `text` matches the SQL LIKE `pattern` (``%`` any run, ``_`` any one character).

    No regular expression and no backtracking: runs of ``%`` are merged, the pattern is split on
    ``%`` and each literal piece is found in turn, leftmost first (``_`` matches any one character
    inside a piece); the first piece must start the text and the last must end it. The work is at
    most len(text) x len(pattern) character comparisons, whatever the pattern.

    Example:
        >>> like_match("vi%.t_ny", "vision.tiny"), like_match("%%%%%%%%%%!", "a" * 37)
        (True, False)
    """
    if not case:
        pattern, text = pattern.lower(), text.lower()
    pieces = re.sub("%+", "%", pattern).split("%")
    if len(pieces) == 1:
        return len(text) == len(pattern) and _piece_at(pieces[0], text, 0)
    first, *middle, last = pieces
    if len(first) + len(last) > len(text) or not _piece_at(first, text, 0):
        return False
    position, end = len(first), len(text) - len(last)
    for piece in middle:
        found = _find_piece(piece, text, position, end)
        if found < 0:
            return False
        position = found + len(piece)
    return _piece_at(last, text, end) and position <= end


def _piece_at(piece: str, text: str, start: int) -> bool:
    """Whether the literal `piece` (``_`` any one character) is in `text` at `start`."""
    if start + len(piece) > len(text):
        return False
    return all(want == "_" or want == text[start + i] for i, want in enumerate(piece))


def _find_piece(piece: str, text: str, start: int, end: int) -> int:
    """The leftmost position >= start where `piece` fits and ends by `end`, else -1."""
    if "_" not in piece:
        return text.find(piece, start, end)
    for position in range(start, end - len(piece) + 1):
        if _piece_at(piece, text, position):
            return position
    return -1


class Filter:
    """A parsed MLflow filter: call it as match(name, tags); ``names`` are the names ``name = 'x'`` asks for.

    ``names`` is None when no clause fixes the name; a set (empty when two clauses disagree)
    lets a view narrow its database query before building any entity.
    """

    def __init__(self, tests: list[tuple[str | None, str, str]]) -> None:
        self.tests = tests
        self.names: set[str] | None = None
        for tag, op, value in tests:
            if tag is None and op == "=":
                self.names = {value} if self.names is None else self.names & {value}

    def __call__(self, name: str, tags: dict) -> bool:
        for tag, op, value in self.tests:
            actual = name if tag is None else tags.get(tag)
            if op == "!=":
                ok = actual != value
            elif actual is None:
                ok = False
            elif op == "=":
                ok = actual == value
            else:
                ok = like_match(value, actual, case=op == "LIKE")
            if not ok:
                return False
        return True


def parse_filter(text: str | None) -> Filter:
    """Return match(name, tags) for an MLflow filter string (empty: everything matches)."""
    if text and len(text) > MAX_FILTER_CHARS:
        raise ValidationError(
            f"The filter is {len(text):,} characters long; at most {MAX_FILTER_CHARS:,} are read. "
            f"Send fewer or shorter clauses ({SUPPORTED}).",
            code=INVALID,
        )
    tests = []
    for clause in _AND.split(text.strip()) if text and text.strip() else []:
        found = _CLAUSE.match(clause)
        if found is None:
            raise ValidationError(
                f"Unsupported filter clause {clause[:200]!r}: ModelHub's MLflow registry understands {SUPPORTED}.",
                code=INVALID,
            )
        key, op, value = found["key"], found["op"].upper(), found["value"][1:-1]
        tag = None if key.lower() == "name" else key.split(".", 1)[1].strip("`")
        tests.append((tag, op, value))
    return Filter(tests)


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
        # Bounded: a token of thousands of "[" must not reach json.loads' recursion (a 500).
        document = json_loads_bounded(base64.urlsafe_b64decode(token.encode()), max_depth=2, what="a page token")
        offset = document["offset"]
        if isinstance(offset, int) and offset >= 0:
            return offset
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, ValidationError):
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


def paged_lazily(items: Iterable, *, offset: int, size: int) -> tuple[list, str]:
    """Return (this page, next page token or "") of an iterable, reading at most offset + size + 1 items."""
    window = list(itertools.islice(items, offset, offset + size + 1))
    return window[:size], page_token(offset + size) if len(window) > size else ""
