"""Read what a stored job's params name (its backbone, datasets, a one-line summary), tolerantly.

Jobs stored before the specs existed may hold anything ({"backbone": "abc", "head": 3}), and the
pages listing them must still render: these readers never raise and never parse a spec.
"""

from collections.abc import Mapping
from typing import Any


def _stored_id(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def stored_backbone_id(params: Any) -> int | None:
    """Return the backbone id of a stored job's params, or None; never raises.

    Jobs stored before the specs existed may hold anything ({"backbone": "abc", "head": 3}), and
    pages listing them must still render.
    """
    return _stored_id(params.get("backbone")) if isinstance(params, Mapping) else None


def stored_dataset_ids(params: Any) -> set[int]:
    """Return the dataset ids a stored job's params name (any shape of params; never raises)."""
    if not isinstance(params, Mapping):
        return set()
    found = [params.get("dataset")]
    train = params.get("train")
    if isinstance(train, Mapping):
        found.append(train.get("dataset"))
    tasks = params.get("tasks")
    if isinstance(tasks, list):
        found += [entry.get("dataset") for entry in tasks if isinstance(entry, Mapping)]
    return {i for i in map(_stored_id, found) if i is not None}


def stored_summary(params: Any) -> str:
    """Return what a stored job works on, for lists ("quadrant", "a, b", "insert after hidden")."""
    if not isinstance(params, Mapping):
        return ""
    if _text(params.get("task")):
        return params["task"]
    tasks = params.get("tasks")
    if isinstance(tasks, list):
        names = [_text(entry.get("task")) for entry in tasks if isinstance(entry, Mapping)]
        return ", ".join(name for name in names if name)
    for key, verb, field in (("insert", "insert after", "after_layer"), ("widen", "widen", "layer")):
        change = params.get(key)
        if isinstance(change, Mapping) and _text(change.get(field)):
            return f"{verb} {change[field]}"
    return ""


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
