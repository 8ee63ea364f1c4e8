"""Worker side: fetch a backbone version's verified file and load it safely (imports TensorFlow)."""

import tempfile
from pathlib import Path

from django.conf import settings

from modelhub.artifacts.models import Blob
from modelhub.artifacts.services import blob_fetch_verified
from modelhub.backbones.models import BackboneVersion


def fetch_blob_to(blob: Blob, directory: Path, name: str) -> Path:
    """Copy a blob (checksum verified) into `directory` as `name`; return the path."""
    return blob_fetch_verified(blob=blob, destination=Path(directory) / name)


def load_model_blob(blob: Blob, directory: Path | None = None):
    """Load a stored .keras blob with the safe loader; return the Keras model."""
    with tempfile.TemporaryDirectory(prefix="modelhub-blob-") as tmp:
        path = fetch_blob_to(blob, Path(directory or tmp), f"{blob.sha256}.keras")
        return load_model_file(path)


def load_model_file(path: Path):
    """Load a local .keras file with the safe loader and the configured size limits."""
    from modelhub.ml.safe_load import load_keras_model

    return load_keras_model(
        path,
        max_bytes=settings.MODELHUB_MAX_UPLOAD_BYTES,
        max_uncompressed_bytes=settings.MODELHUB_MAX_MODEL_UNCOMPRESSED_BYTES,
    )


def load_backbone(version: BackboneVersion):
    """Return the backbone model of a version, cut at its feature layer when one is set."""
    from modelhub.ml.inspect import backbone_up_to

    model = load_model_blob(version.blob)
    layer = version.spec.get("feature_layer") or version.feature_layer
    if layer and model.layers and layer != model.layers[-1].name:
        model = backbone_up_to(model, layer)
    return model
