"""An opened ``.keras`` file: its flat graph, and its layers' weights and assets, read lazily.

Opening goes through the one reader of untrusted bytes (:mod:`modelhub.ml.untrusted`), so
the zip, the config and the weights file's structure are checked before anything here reads
them. Keras names each layer's stored state by class and position, not by layer name; this
module maps the flat graph's leaves (:mod:`modelhub.ml.keras_file.graph`) onto those paths.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from modelhub.ml.errors import InvalidModelFileError, UnsafeModelError
from modelhub.ml.keras_file.graph import MODEL_STATE_PREFIXES, FlatNode, parse_config
from modelhub.ml.untrusted import ASSETS_PREFIX, WEIGHTS_MEMBER, Limits, UntrustedKerasFile


class KerasArchive:
    """An opened ``.keras`` file: its flat graph, weights and assets, read lazily.

    Opening goes through :class:`modelhub.ml.untrusted.UntrustedKerasFile`, so the zip, the
    config and the weights file's structure are checked before anything here reads them, and
    every weight read is checked for NaN and Inf. Use as a context manager.

    Example:
        >>> with KerasArchive("full.keras") as archive:
        ...     archive.graph.resolve("pool")
    """

    def __init__(self, path: str | os.PathLike[str], *, limits: Limits | None = None) -> None:
        self.path = Path(path)
        self.file = UntrustedKerasFile(self.path, limits=limits)
        try:
            self.config = self.file.config
            self.graph = parse_config(self.config)
        except BaseException:
            self.file.close()
            raise
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._assets_dir: Path | None = None
        self._values_checked = False
        self._weights_cache: dict[str, list[tuple[str, np.ndarray]]] = {}

    def __enter__(self) -> KerasArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def file_info(self) -> dict[str, Any]:
        """What the checks saw (see :meth:`modelhub.ml.untrusted.UntrustedKerasFile.info`)."""
        return self.file.info()

    def check_values(self) -> None:
        """Read every weight once and refuse NaN or Inf (done once per opened file)."""
        if not self._values_checked:
            self.file.check_values()
            self._values_checked = True

    @property
    def h5_path(self) -> Path:
        """The checked weights file, extracted into a temporary folder."""
        if not self.file.has_weights:
            raise InvalidModelFileError(
                f"Expected '{WEIGHTS_MEMBER}' inside '{self.path.name}'. Save the model with "
                "model.save('x.keras') (Keras 3)."
            )
        return self.file.h5_path

    @property
    def assets_dir(self) -> Path | None:
        """The archive's assets, extracted, or None when it has none."""
        if self._assets_dir is None:
            members = [name for name in self.file.names if name.startswith(ASSETS_PREFIX) and not name.endswith("/")]
            if not members:
                return None
            self._tmp = self._tmp or tempfile.TemporaryDirectory(prefix="modelhub-archive-")
            for member in members:
                self.file.extract_member(member, self._tmp.name)
            self._assets_dir = Path(self._tmp.name) / ASSETS_PREFIX.rstrip("/")
        return self._assets_dir

    def stores_sublayers(self, node: FlatNode) -> bool:
        """Whether ``node``'s layer is a model kept by its constructor arguments (a keras-hub backbone).

        Its file holds its sub-layers' weights (``layers/...``) but no layer graph, so the
        flat graph cannot look inside it: it is one opaque layer.
        """
        return any(name.startswith("layers/") for name, _ in self.layer_state(node.layer_key))

    def layer_state(self, layer_key: str) -> list[tuple[str, np.ndarray]]:
        """Return ``[(relative name, array)]`` for a layer's weights and assets, sorted.

        Weights come from the checked datasets under ``layer_key`` (sub-layers included);
        assets (vocabularies) as uint8 arrays of their file bytes.
        """
        if layer_key in self._weights_cache:
            return self._weights_cache[layer_key]
        items: list[tuple[str, np.ndarray]] = list(self.file.iter_datasets(layer_key)) if layer_key else []
        prefix = f"{ASSETS_PREFIX}{layer_key}/"
        for member in sorted(self.file.names):
            if member.startswith(prefix) and not member.endswith("/"):
                items.append(
                    (f"assets/{member[len(prefix) :]}", np.frombuffer(self.file.read_member(member), dtype=np.uint8))
                )
        items.sort(key=lambda item: item[0])
        self._weights_cache[layer_key] = items  # the reference is compared with every file: read it once
        return items

    def weights_paths(self) -> list[str]:
        """Return every dataset path in the weights file."""
        return sorted(self.file.datasets)

    def check_layout(self) -> None:
        """Raise unless every stored weight belongs to a leaf of the flat graph.

        This guards the one assumption this module makes about Keras' file layout.
        """
        keys = sorted({node.layer_key for node in self.graph.nodes if node.layer_key}, key=len, reverse=True)
        for path in self.weights_paths():
            if path.startswith(MODEL_STATE_PREFIXES):
                continue  # a compiled model's optimizer slots and the model's own variables
            if not any(path.startswith(key + "/") for key in keys):
                raise InvalidModelFileError(
                    f"Expected every weight in '{self.path.name}' to belong to a layer of its config, found "
                    f"'{path}' that does not. The file may come from another Keras version; load it with "
                    "Keras and save it again with model.save('x.keras')."
                )


def import_registering_packages(config: Any) -> None:
    """Import keras-hub when a checked config names its allowed classes, so Keras can find them.

    Raises:
        UnsafeModelError: the model needs keras-hub and it is not installed.
    """
    if '"keras_hub>' not in json.dumps(config):
        return
    try:
        import keras_hub  # noqa: F401
    except ImportError as error:
        raise UnsafeModelError(
            "Expected keras-hub to be installed to load this model (it uses keras-hub classes), "
            "but it is not. Install the project's requirements."
        ) from error
