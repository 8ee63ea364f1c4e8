"""Worker side: turn Keras heads into stored blobs and describe them (imports TensorFlow)."""

import math
import tempfile
from pathlib import Path

from modelhub.artifacts.models import Blob
from modelhub.artifacts.services import blob_store_path


def head_output_width(head) -> int:
    """Return the number of values the head outputs per row (its flattened output size)."""
    from modelhub.ml.errors import FeatureShapeMismatchError

    if len(head.outputs) != 1:
        raise FeatureShapeMismatchError(
            f"Expected a head with one output tensor, '{head.name}' has {len(head.outputs)}. "
            "Upload each output as its own head (one task each)."
        )
    dims = head.outputs[0].shape[1:]
    if any(d is None for d in dims):
        raise FeatureShapeMismatchError(f"Expected a head with a fixed output shape, got {list(dims)}.")
    return int(math.prod(int(d) for d in dims))


def save_model_as_blob(model, name: str = "model") -> Blob:
    """Save a Keras model to .keras and store it content-addressed; return the blob."""
    with tempfile.TemporaryDirectory(prefix="modelhub-save-") as tmp:
        path = Path(tmp) / f"{name}.keras"
        model.save(path)
        return blob_store_path(path=path).blob
