"""The reader: an uploaded ``.keras`` file, opened once stages 1 to 3 passed; data read one dataset at a time."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from modelhub.ml.errors import InvalidModelFileError, UnsafeModelError
from modelhub.ml.untrusted.config import check_config_safe, parse_json_member
from modelhub.ml.untrusted.h5 import DatasetInfo, check_h5
from modelhub.ml.untrusted.limits import (
    ASSETS_PREFIX,
    CONFIG_MEMBER,
    HDF5_MAGIC,
    KNOWN_MEMBERS,
    METADATA_MEMBER,
    SAVE_HINT,
    WEIGHTS_MEMBER,
    Limits,
)
from modelhub.ml.untrusted.zip_members import check_zip_members, open_zip


class UntrustedKerasFile:
    """An uploaded ``.keras`` file, opened only after its zip, config and weights layout passed.

    Use as a context manager. Opening runs stages 1 to 3 (see the module docstring); data
    are read later, one dataset at a time, through :meth:`read_dataset`.

    Example:
        >>> with UntrustedKerasFile("upload.keras") as file:
        ...     file.config["class_name"], len(file.datasets)
        ('Functional', 4)
    """

    def __init__(self, path: str | os.PathLike[str], *, limits: Limits | None = None, weights: bool = True) -> None:
        self.path = Path(path)
        self.limits = limits or Limits()
        self.what = f"'{self.path.name}'"
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._h5 = None
        self.h5_path: Path | None = None
        self._zip = open_zip(self.path, self.limits)
        try:
            infos = self._zip.infolist()
            self.uncompressed_bytes = check_zip_members(
                infos,
                what=self.what,
                max_members=self.limits.max_members,
                max_unpacked=self.limits.max_uncompressed_bytes,
            )
            self.names = [info.filename for info in infos]
            self._check_member_set()
            self.config = self._read_json(CONFIG_MEMBER, self.limits.max_config_bytes)
            if not isinstance(self.config, dict) or "class_name" not in self.config:
                raise InvalidModelFileError(
                    "Expected config.json to describe a Keras model (a dict with 'class_name'), "
                    f"received {type(self.config).__name__}. {SAVE_HINT}"
                )
            check_config_safe(self.config, limits=self.limits)
            metadata = self._read_json(METADATA_MEMBER, 1024 * 1024) if METADATA_MEMBER in self.names else {}
            self.metadata = metadata if isinstance(metadata, dict) else {}
            self.datasets: dict[str, DatasetInfo] = {}
            if weights and WEIGHTS_MEMBER in self.names:
                self._open_weights()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> UntrustedKerasFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the weights file and the zip, and remove extracted members."""
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None
        self._zip.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    @property
    def has_weights(self) -> bool:
        """Whether the file has a (checked) weights file."""
        return self._h5 is not None

    def info(self) -> dict[str, Any]:
        """What the checks saw: sizes, member and weight counts, Keras version, class name."""
        return {
            "bytes": self.path.stat().st_size,
            "num_members": len(self.names),
            "uncompressed_bytes": self.uncompressed_bytes,
            "keras_version": self.metadata.get("keras_version"),
            "class_name": self.config["class_name"],
            "num_weight_arrays": len(self.datasets),
            "declared_weight_bytes": sum(info.declared_bytes for info in self.datasets.values()),
        }

    def _check_member_set(self) -> None:
        names = set(self.names)
        if "saved_model.pb" in {Path(name).name for name in names}:
            raise UnsafeModelError(
                "Expected a .keras archive, received a zipped SavedModel (saved_model.pb). "
                f"SavedModels can run arbitrary TensorFlow ops. {SAVE_HINT}"
            )
        if CONFIG_MEMBER not in names:
            raise InvalidModelFileError(
                f"Expected '{CONFIG_MEMBER}' inside the .keras archive, found only {sorted(names)[:10]}. {SAVE_HINT}"
            )
        unknown = sorted(name for name in names if name not in KNOWN_MEMBERS and not name.startswith(ASSETS_PREFIX))
        if unknown:
            raise InvalidModelFileError(
                f"Expected only {sorted(KNOWN_MEMBERS)} and assets/ in {self.what}, found {unknown[:5]}. "
                f"Keras never writes these. {SAVE_HINT}"
            )

    def _read_json(self, member: str, max_bytes: int) -> Any:
        info = self._zip.getinfo(member)
        if info.file_size > max_bytes:
            raise InvalidModelFileError(
                f"Expected {member} of at most {max_bytes:,} bytes in {self.what}, it unpacks to "
                f"{info.file_size:,}. Refused before unpacking."
            )
        with self._zip.open(info) as stream:
            raw = stream.read(max_bytes + 1)
        if len(raw) > max_bytes:
            raise InvalidModelFileError(
                f"Expected {member} of at most {max_bytes:,} bytes in {self.what}, it is larger."
            )
        return parse_json_member(raw, what=f"{member} in {self.what}", max_depth=self.limits.max_config_depth)

    def _open_weights(self) -> None:
        import h5py

        self._tmp = tempfile.TemporaryDirectory(prefix="modelhub-untrusted-")
        h5_path = self.h5_path = Path(self._zip.extract(WEIGHTS_MEMBER, self._tmp.name))
        with h5_path.open("rb") as handle:
            magic = handle.read(len(HDF5_MAGIC))
        if magic != HDF5_MAGIC:
            raise InvalidModelFileError(
                f"Expected '{WEIGHTS_MEMBER}' in {self.what} to be an HDF5 file (it starts with {HDF5_MAGIC!r}), "
                f"it starts with {magic!r}. {SAVE_HINT}"
            )
        try:
            self._h5 = h5py.File(h5_path, "r")
        except (OSError, ValueError) as error:
            raise InvalidModelFileError(
                f"Expected a readable '{WEIGHTS_MEMBER}' in {self.what}: HDF5 could not open it ({error}). "
                f"The file is truncated or corrupt. {SAVE_HINT}"
            ) from error
        try:
            self.datasets = check_h5(
                self._h5,
                what=f"'{WEIGHTS_MEMBER}' of {self.what}",
                file_bytes=h5_path.stat().st_size,
                limits=self.limits,
            )
        except (OSError, RuntimeError, KeyError, ValueError) as error:
            raise InvalidModelFileError(
                f"Expected a well-formed '{WEIGHTS_MEMBER}' in {self.what}: reading its structure failed "
                f"({type(error).__name__}: {error}). {SAVE_HINT}"
            ) from error

    def read_dataset(self, path: str) -> np.ndarray:
        """Return one checked dataset's data, refusing NaN and Inf in float weights.

        Raises:
            KeyError: ``path`` is not a checked dataset.
            InvalidModelFileError: the data cannot be read, or hold NaN or Inf.
        """
        info = self.datasets[path]
        try:
            array = np.asarray(self._h5[path][()])
        except (OSError, RuntimeError, ValueError) as error:
            raise InvalidModelFileError(
                f"Expected readable weights at '{path}' in {self.what}, reading failed ({error}). {SAVE_HINT}"
            ) from error
        if array.dtype.kind in "fc" and not np.all(np.isfinite(array)):
            bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            raise InvalidModelFileError(
                f"Expected finite weights in {self.what}, '{path}' ({'x'.join(map(str, info.shape))} "
                f"{info.dtype}) holds {bad} NaN or Inf value(s). Train or repair the model and save it again."
            )
        return array

    def iter_datasets(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(path relative to prefix, data)`` for every checked dataset under ``prefix``, sorted."""
        start = f"{prefix}/" if prefix else ""
        for path in sorted(self.datasets):
            if path.startswith(start):
                yield path[len(start) :], self.read_dataset(path)

    def check_values(self) -> None:
        """Read every dataset once and refuse NaN or Inf (bounded by ``max_declared_bytes``)."""
        for path in self.datasets:
            self.read_dataset(path)

    def read_member(self, name: str) -> bytes:
        """Return a zip member's bytes (an asset); its size was bounded by stage 1."""
        return self._zip.read(name)

    def extract_member(self, name: str, destination: str | os.PathLike[str]) -> Path:
        """Extract a checked member below ``destination``; return its path."""
        return Path(self._zip.extract(name, os.fspath(destination)))


def read_config(path: str | os.PathLike[str], *, limits: Limits | None = None) -> dict[str, Any]:
    """Return the checked ``config.json`` of a ``.keras`` file (stages 1 and 2 only)."""
    with UntrustedKerasFile(path, limits=limits, weights=False) as file:
        return file.config
