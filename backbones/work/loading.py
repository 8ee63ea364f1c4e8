"""Worker side: fetch a backbone version's verified file and load it safely (imports TensorFlow)."""

import tempfile
from pathlib import Path

from django.conf import settings

from artifacts.models import Blob
from artifacts.services import blob_fetch_verified
from backbones.models import BackboneVersion


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

    return load_keras_model(path, **model_file_limits())


def model_file_limits() -> dict:
    """The configured limits for model files (fields of modelhub.ml.untrusted.Limits)."""
    return {
        "max_bytes": settings.MODELHUB_MAX_UPLOAD_BYTES,
        "max_uncompressed_bytes": settings.MODELHUB_MAX_MODEL_UNCOMPRESSED_BYTES,
        "max_config_bytes": settings.MODELHUB_MAX_MODEL_CONFIG_BYTES,
        "max_layers": settings.MODELHUB_MAX_MODEL_LAYERS,
        "max_datasets": settings.MODELHUB_MAX_MODEL_WEIGHT_ARRAYS,
        "max_declared_bytes": settings.MODELHUB_MAX_MODEL_DECLARED_BYTES,
    }


def load_backbone(version: BackboneVersion):
    """Return the backbone model of a version, cut at its feature layer (at any depth) when one is set."""
    with tempfile.TemporaryDirectory(prefix="modelhub-blob-") as tmp:
        return fetch_backbone(version, Path(tmp))[0]


def fetch_backbone(version: BackboneVersion, directory: Path):
    """Fetch a version's file into `directory` and load its backbone.

    Returns:
        (the Keras backbone, the fetched file's path when the backbone is that file as it is,
        i.e. it already ends at the feature layer; else None).
    """
    layer = version.feature_layer or version.spec.get("feature_layer") or None
    path = fetch_blob_to(version.blob, Path(directory), f"{version.blob.sha256}.keras")
    if _ends_at_feature_layer(path, layer):
        return load_model_file(path), path
    from modelhub.ml.keras_file.submodel import backbone_from_file

    return backbone_from_file(path, layer, limits=_limits()), None


def _ends_at_feature_layer(path: Path, feature_layer: str | None) -> bool:
    """Whether the file already ends at the feature layer; reads only its zip and config (checked).

    The weights are checked once, by whichever loader reads them next.
    """
    from modelhub.ml.keras_file.submodel import ends_at

    if not feature_layer:
        return True
    return ends_at(path, feature_layer, limits=_limits())


def _limits():
    from modelhub.ml.untrusted import Limits

    return Limits.from_kwargs(**model_file_limits())


def load_backbone_file(path: Path, feature_layer: str | None):
    """Load a checked backbone file, cut at `feature_layer` unless that is already its output."""
    from modelhub.ml.keras_file.submodel import backbone_from_file

    if _ends_at_feature_layer(path, feature_layer):
        return load_model_file(path)
    return backbone_from_file(path, feature_layer, limits=_limits())


def check_model_file(path: Path) -> dict:
    """Run the untrusted-file reader's checks (zip, config, weights) with the configured limits."""
    from modelhub.ml.safe_load import check_keras_archive

    return check_keras_archive(path, **model_file_limits())
