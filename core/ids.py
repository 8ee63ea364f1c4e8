"""One parser of ids and version numbers taken from requests, for every app (core imports no app).

``"²".isdigit()`` is True but ``int("²")`` raises ValueError, and a 5,000-digit string passes
``isdigit()`` but not ``int()`` (Python's digit limit) nor the database (a 64-bit key): a view
that trusts ``isdigit()`` answers 500. ``parse_id`` takes ASCII digits only, at most 18 of them.
"""

MAX_ID_DIGITS = 18


def parse_id(raw) -> int | None:
    """A primary key or version number from a path, query or form value, or None.

    ASCII digits only ("²".isdigit() is True, int("²") fails) and at most 18 of them (a larger
    number overflows the database's key).

    Example:
        >>> parse_id("42"), parse_id("²"), parse_id("1" * 19), parse_id(None)
        (42, None, None, None)
    """
    text = str(raw or "")
    if not (text.isascii() and text.isdigit()) or len(text) > MAX_ID_DIGITS:
        return None
    return int(text)
