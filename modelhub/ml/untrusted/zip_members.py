"""Stage 1: the zip directory of an untrusted file (``.keras`` files and dataset zips alike)."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

from modelhub.ml.errors import InvalidModelFileError, UnsafeModelError
from modelhub.ml.untrusted.limits import HDF5_MAGIC, SAVE_HINT, Limits

ZIP_COMPRESSIONS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})


def check_zip_members(infos: list[zipfile.ZipInfo], *, what: str, max_members: int, max_unpacked: int) -> int:
    """Refuse a zip directory that could escape, hide or multiply what it holds.

    Used for ``.keras`` files and dataset zips alike.

    Args:
        infos: ``ZipFile.infolist()``.
        what: the file, as the user knows it (for messages).
        max_members, max_unpacked: ceilings on the member count and the total unpacked size.

    Returns:
        The total unpacked size.

    Raises:
        UnsafeModelError: absolute or escaping paths, duplicate names, symlinks, encryption.
        InvalidModelFileError: too many members, too large unpacked, unknown compression.
    """
    if len(infos) > max_members:
        raise InvalidModelFileError(
            f"Expected at most {max_members:,} members in {what}, found {len(infos):,}. "
            "Refused before reading any of them."
        )
    seen: set[str] = set()
    unpacked = 0
    for info in infos:
        name = info.filename
        _check_member_name(name, what)
        folded = name.replace("\\", "/")
        if folded in seen:
            raise UnsafeModelError(
                f"Expected each member of {what} once, found '{name}' twice. A reader would see one copy "
                "and a checker the other, so such archives are refused."
            )
        seen.add(folded)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UnsafeModelError(
                f"Expected plain files in {what}, found the symbolic link '{name}'. Links could point "
                "at files on the server, so they are refused."
            )
        if info.flag_bits & 0x1:
            raise UnsafeModelError(f"Expected unencrypted members in {what}, '{name}' is encrypted.")
        if info.compress_type not in ZIP_COMPRESSIONS:
            raise InvalidModelFileError(
                f"Expected stored or deflated members in {what}, '{name}' uses zip compression method "
                f"{info.compress_type}. Save it again with the standard tools."
            )
        if info.file_size < 0 or info.compress_size < 0:
            raise InvalidModelFileError(f"Expected non-negative sizes in {what}, '{name}' declares negative ones.")
        unpacked += info.file_size
    if unpacked > max_unpacked:
        raise InvalidModelFileError(
            f"Expected at most {max_unpacked:,} uncompressed bytes in {what}, its members declare {unpacked:,} "
            "unpacked; it looks like a zip bomb."
        )
    return unpacked


def _check_member_name(name: str, what: str) -> None:
    normalized = name.replace("\\", "/")
    parts = normalized.split("/")
    if "\x00" in name:
        raise UnsafeModelError(f"Expected member names without NUL bytes in {what}, found {name!r}.")
    if normalized.startswith("/") or (len(normalized) > 1 and normalized[1] == ":"):
        raise UnsafeModelError(f"Expected relative member paths in {what}, found the absolute path '{name}'.")
    if ".." in parts:
        raise UnsafeModelError(f"Expected member paths inside {what}, found '{name}' which escapes it with '..'.")


def open_zip(path: Path, limits: Limits) -> zipfile.ZipFile:
    if path.is_dir():
        raise UnsafeModelError(
            f"Expected a single .keras file, received the directory '{path}' (a SavedModel or an unpacked "
            f"archive). SavedModels can run arbitrary TensorFlow ops when loaded, so they are not accepted. {SAVE_HINT}"
        )
    if not path.is_file():
        raise InvalidModelFileError(f"Expected a .keras file at '{path}', but nothing is there.")
    if path.name == "saved_model.pb" or path.suffix == ".pb":
        raise UnsafeModelError(
            f"Expected a .keras file, received the SavedModel graph '{path.name}'. "
            f"SavedModels can run arbitrary TensorFlow ops, so they are not accepted. {SAVE_HINT}"
        )
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise InvalidModelFileError(
            f"Expected a .keras file of at most {limits.max_bytes:,} bytes, received {size:,} bytes. "
            "Upload a smaller model or raise the limit."
        )
    with path.open("rb") as handle:
        head = handle.read(8)
    if not zipfile.is_zipfile(path):
        kind = "an HDF5 (.h5) file" if head.startswith(HDF5_MAGIC) else "a file that is not a zip"
        raise InvalidModelFileError(f"Expected a .keras zip archive, received {kind} ('{path.name}'). {SAVE_HINT}")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as error:
        raise InvalidModelFileError(
            f"Expected a readable .keras zip archive, '{path.name}' is corrupt: {error}. {SAVE_HINT}"
        ) from error
