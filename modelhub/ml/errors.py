"""Exception hierarchy of the ML library.

Every failure that ``modelhub.ml`` can diagnose is raised as a subclass of
:class:`MLError`, so callers (Celery tasks, services) can catch one base type and
record the message on a job row. Messages say what was expected, what was
received and how to fix it.
"""

from __future__ import annotations


class MLError(Exception):
    """Base class of every error raised on purpose by ``modelhub.ml``."""


class InvalidModelFileError(MLError):
    """The uploaded file is not a loadable, well-formed ``.keras`` archive."""


class UnsafeModelError(InvalidModelFileError):
    """The model file would run code or ops we do not trust (Lambda, custom objects, SavedModel)."""


class LayerNotFoundError(MLError):
    """A named layer (feature layer, growth anchor) does not exist in the model."""


class BackboneMismatchError(MLError):
    """A full model's backbone is not bit-identical (or not structurally the same) as the reference."""


class HeadExtractionError(MLError):
    """The head of a full model cannot be cut out as a standalone model."""


class FeatureShapeMismatchError(MLError):
    """A head's input shape does not match the backbone's feature shape."""


class GrowthError(MLError):
    """A requested growth (insert or widen) is not supported for this model or layer."""


class GrowthNotPreservedError(GrowthError):
    """A growth changed the model's function by more than the tolerance."""


class InvalidTaskIdError(MLError):
    """A task id passed to an assembled model is out of range."""


class InvalidDatasetError(MLError):
    """Arrays passed for training or evaluation have the wrong shape, dtype or length."""


class TrainingCancelled(MLError):  # noqa: N818 - it is a signal, not a failure.
    """Training stopped because ``should_cancel()`` returned True."""


class AssemblyError(MLError):
    """An assembly cannot be built from the given backbone and heads."""


class AssemblyVerificationError(AssemblyError):
    """An assembled SavedModel does not reproduce backbone + head outputs within tolerance."""


class ExportError(MLError):
    """An assembly cannot be exported to ONNX or LiteRT (a layer the converter cannot handle, string
    inputs, or an export that does not reproduce the SavedModel within the tolerance)."""


class FamilySplitError(MLError):
    """Some files of a family cannot be split; ``errors`` maps file index -> message."""

    def __init__(self, message: str, errors: dict[int, str]) -> None:
        super().__init__(message)
        self.errors = errors


class ProbeShapeError(MLError):
    """No probe rows fit the model: an open (None) input length no layer accepts, or a bad probe_shape."""
