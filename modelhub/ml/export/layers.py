"""Name the layer behind a converter failure: converters speak of graph nodes, users know layers.

Inside the export ``tf.function`` every op a Keras layer adds is named ``.../<layer name>/<op>``;
tf2onnx keeps those names on its nodes and the LiteRT converter quotes them in its errors (TensorFlow
may add a ``_1`` suffix to the scope). The longest layer name that is a path component of the text
is the one to blame.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from modelhub.ml.assembly.manifest import AssemblyHead
from modelhub.ml.branches import Trunk
from modelhub.ml.head_weights import PackedDenseHead


def layer_owners(backbone: Any, heads: Sequence[AssemblyHead], trunk: Trunk | None) -> dict[str, str]:
    """Map each layer name in the export to where it lives ("the backbone", "head 'topic'", ...)."""
    owners: dict[str, str] = {}

    def add(model: Any, owner: str) -> None:
        for layer in model._flatten_layers(include_self=False, recursive=True):  # noqa: SLF001
            owners.setdefault(layer.name, owner)

    add(backbone, "the backbone")
    for segment in trunk.segments if trunk is not None else []:
        add(segment, "the backbone")
    for head in heads:
        if head.branch is not None:
            add(head.branch.model, f"the branch of task '{head.task}'")
        if not isinstance(head.model, PackedDenseHead):
            add(head.model, f"head '{head.task}'")
    return owners


def blame(texts: Iterable[str], owners: dict[str, str]) -> str | None:
    """Return "layer 'x' (Class?) in <owner>" for the layer named in ``texts``, or None."""
    best: tuple[int, str] | None = None
    for text in texts:
        for name in owners:
            if re.search(rf"(^|[/\"'\s(]){re.escape(name)}(_\d+)?(/|$|[\"'\s)])", text):
                if best is None or len(name) > best[0]:
                    best = (len(name), name)
    if best is None:
        return None
    return f"layer '{best[1]}' in {owners[best[1]]}"
