"""Cut the head out of one full model, given the stored backbone it was built on.

The backbone may be nested in the full model at any depth, or flattened; both files are read
as flat graphs and lined up (:mod:`modelhub.ml.keras_file`), and only the head is deserialised.
:func:`cut_heads` is how a family split (:mod:`modelhub.ml.split.family`) builds each file's heads: one
per model output.
"""

from __future__ import annotations

import os

from modelhub.ml.errors import BackboneMismatchError, HeadExtractionError
from modelhub.ml.keras_file.align import align, cut_error, map_ref, require_identical_backbone
from modelhub.ml.keras_file.archive import KerasArchive
from modelhub.ml.keras_file.graph import TensorRef
from modelhub.ml.keras_file.submodel import build_submodel

HEAD_INPUT_NAME = "features"


def cut_head(opened: KerasArchive, feature: TensorRef, *, name: str, label: str):
    outputs = opened.graph.outputs
    if len(outputs) != 1:
        raise HeadExtractionError(
            f"Expected '{label}' to have one output (one task), it has {len(outputs)}. Save one model per task, "
            "or import it with POST /api/imports/, which makes one head per output."
        )
    return build_submodel(opened, outputs[0], start=feature, start_name=HEAD_INPUT_NAME, name=name)


def output_names(opened: KerasArchive) -> list[str]:
    """Return one name per output of the file's model, in the order of ``opened.graph.outputs``.

    Dict outputs are named by their keys (nested keys joined by '-'); list outputs (and a
    single output) by the layer that makes them. A name that repeats gets ``_1``, ``_2``, ...

    Example:
        >>> output_names(KerasArchive("alpha.keras"))  # keras.Model(x, {"cls": a, "reg": b})
        ['cls', 'reg']
    """
    config = opened.config.get("config") or {}
    if opened.config.get("class_name") == "Functional":
        names = _names_of(config.get("output_layers"), "")
    else:
        names = [layer.get("name") or "output" for layer in config.get("layers", [])[-1:]]
    if len(names) != len(opened.graph.outputs):
        names = [f"output_{position}" for position in range(len(opened.graph.outputs))]
    unique: list[str] = []
    for name in names:
        candidate, counter = name, 0
        while candidate in unique:
            counter += 1
            candidate = f"{name}_{counter}"
        unique.append(candidate)
    return unique


def _names_of(value, prefix: str) -> list[str]:
    if isinstance(value, dict):
        return [name for key, item in value.items() for name in _names_of(item, f"{prefix}{key}-")]
    if isinstance(value, (list, tuple)) and len(value) == 3 and isinstance(value[0], str):
        return [prefix[:-1] if prefix else str(value[0])]
    if isinstance(value, (list, tuple)):
        return [name for item in value for name in _names_of(item, prefix)]
    return []


def cut_heads(opened: KerasArchive, feature: TensorRef, *, name: str, label: str) -> list[tuple[str, object]]:
    """Cut one head per model output, each from the feature tensor to that output.

    Layers that several outputs share after the feature tensor (a shared Dense below two
    output layers, say) are copied into each head with their weights, so every head computes
    its output exactly as the full model does, on its own.

    Returns:
        ``[(output name, head)]`` in the model's output order (:func:`output_names`); a
        single-output model gives one pair and its head is named ``name``.
    """
    outputs = opened.graph.outputs
    names = output_names(opened)
    if len(outputs) == 1:
        return [(names[0], cut_head(opened, feature, name=name, label=label))]
    return [
        (output, build_submodel(opened, ref, start=feature, start_name=HEAD_INPUT_NAME, name=f"{name}_{output}"))
        for output, ref in zip(names, outputs, strict=True)
    ]


def split_full_model(backbone_path: str | os.PathLike[str], full_path: str | os.PathLike[str], *, name: str = "head"):
    """Cut the head out of one full model, given the stored backbone it was built on.

    The backbone may be nested in the full model at any depth, or flattened.

    Args:
        backbone_path: the stored backbone's ``.keras`` file (checked already).
        full_path: the full model's ``.keras`` file (checked already).
        name: the head's name.

    Returns:
        The head, a ``keras.Model`` whose input ``features`` is the backbone's output.

    Raises:
        BackboneMismatchError: the full model's backbone differs (first difference named).
        HeadExtractionError: the head reads more than the feature tensor.
    """
    with KerasArchive(backbone_path) as backbone, KerasArchive(full_path) as full:
        full.check_layout()
        if len(backbone.graph.outputs) != 1:
            raise BackboneMismatchError("Expected a backbone with one output.")
        feature = backbone.graph.outputs[0]
        alignment = align(backbone, full, stop_at=feature[0])
        require_identical_backbone(alignment, backbone.graph, feature, label=f"model '{full.graph.name}'")
        mapped = map_ref(alignment, feature)
        problem = cut_error(full.graph, mapped)
        if problem:
            raise HeadExtractionError(
                f"Expected the head of '{full.graph.name}' to read only the backbone's output, but {problem}."
            )
        return cut_head(full, mapped, name=name, label=full.graph.name)
