"""What a head's `origin` says about the file it came from, as the head API shows it.

A full model with several outputs imports as one head per output (heads.work.importing); each
head's origin records the file and the other heads cut from it. The API shows them as `from_file`
and `siblings`; this module reads them and gives their OpenAPI shapes, so heads/apis.py stays thin.
"""

from typing import Any

FROM_FILE_SCHEMA = {
    "type": "object",
    "nullable": True,
    "properties": {
        "import": {"type": "integer"},
        "filename": {"type": "string"},
        "sha256": {"type": "string"},
        "outputs": {"type": "array", "items": {"type": "string"}},
        "output": {"type": "string"},
    },
}
SIBLINGS_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"head_version": {"type": "integer"}, "task": {"type": "string"}, "output": {"type": "string"}},
    },
}


def origin_from_file(origin: dict[str, Any] | None) -> dict[str, Any] | None:
    """Return the file a head was cut from with its outputs and the head's own output; None unless it had several."""
    origin = origin or {}
    if not isinstance(origin.get("file"), dict):
        return None
    return {"import": origin.get("import"), **origin["file"], "output": origin.get("output")}


def origin_siblings(origin: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Return the other heads imported from the same file: ``[{"head_version", "task", "output"}]``."""
    return list((origin or {}).get("siblings") or [])
