"""Cut the head out of one full model, given the stored backbone it was built on.

The backbone may be nested in the full model at any depth, or flattened; both files are read
as flat graphs and lined up (:mod:`modelhub.ml.keras_file`), and only the head is deserialised.
:func:`cut_head` is also how a family split (:mod:`modelhub.ml.split.family`) builds each head.
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
            f"Expected '{label}' to have one output (one task), it has {len(outputs)}. Save one model per task."
        )
    return build_submodel(opened, outputs[0], start=feature, start_name=HEAD_INPUT_NAME, name=name)


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
