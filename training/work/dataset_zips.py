"""Worker side: dataset zips (.npz and image zips) opened within the limits, and .npz arrays read.

Every size is checked from headers before anything is decoded or allocated, so a small upload
that declares a huge array cannot take a worker down (issue #11): a zip's directory gives its
member count and unpacked size, each .npy member's header its shape and dtype. The caps are
the MODELHUB_DATASET_* settings; validation and the training loader share these checks.
.npz arrays are read with allow_pickle=False (pickles could run code). Image zips are
training.work.image_zips; the worker jobs that use both are training.work.datasets.
"""

import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings

NPZ_ARRAYS = ("x", "y", "x_val", "y_val", "labels")
MAX_LABELS = 100_000
# A zip directory entry takes 46 bytes plus its name and extra fields; this allows long paths.
MAX_DIRECTORY_BYTES_PER_FILE = 1024
# The finiteness check looks at this many bytes of x at a time (bounded temporary memory).
FINITE_CHECK_BLOCK_BYTES = 64 * 1024**2
NPY_VERSIONS = {(1, 0), (2, 0), (3, 0)}
# What reading a zip member can raise for a damaged file.
ZIP_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError)
NPZ_FIX = "Save with numpy.savez(path, x=..., y=...)."


class DatasetError(Exception):
    """The dataset cannot be used; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class ArrayHeader:
    """What one .npy member of an .npz declares in its header, read before any array data."""

    member: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool

    @property
    def num_bytes(self) -> int:
        """Return the bytes the decoded array takes (exact integer, never overflows)."""
        return math.prod(self.shape) * self.dtype.itemsize

    def describe(self) -> str:
        """Return e.g. "shape (1099511627776, 1024) float32 = 4.0 PiB"."""
        return f"shape {self.shape} {_dtype_name(self.dtype)} = {format_bytes(self.num_bytes)}"


def format_bytes(num_bytes: int) -> str:
    """Return a byte count in binary units, e.g. format_bytes(2 * 1024**3) == "2.0 GiB"."""
    value = float(num_bytes)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{num_bytes} bytes" if unit == "bytes" else f"{value:,.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _dtype_name(dtype: np.dtype) -> str:
    return dtype.name if dtype.kind in "biufc" else dtype.str


def over_limit(found: str, limit: str, setting: str, fix: str = "Upload a smaller dataset") -> DatasetError:
    return DatasetError(f"{found}; {limit} ({setting}). {fix} or raise the limit.")


# --- Zip archives (.npz and image zips) ---------------------------------------------------


def open_dataset_zip(path: Path, *, fix: str) -> zipfile.ZipFile:
    """Open a dataset .npz or .zip once its directory is within the limits; the caller closes it.

    The end-of-directory record is read first, so a directory listing millions of members is
    refused before zipfile builds an entry for each; then the member count and the total
    unpacked size are checked (zip bombs).

    Args:
        path: the file.
        fix: what to tell the user when the file is not a zip at all.

    Returns:
        The open archive.
    """
    max_files = settings.MODELHUB_DATASET_MAX_FILES
    max_unpacked = settings.MODELHUB_DATASET_MAX_UNCOMPRESSED_BYTES
    try:
        with open(path, "rb") as handle:
            end = zipfile._EndRecData(handle)  # the directory's size, before parsing it
    except OSError as exc:
        raise DatasetError(f"Not a readable zip file: {exc}. {fix}") from exc
    if end is None:
        raise DatasetError(f"Not a readable zip file: no zip directory found. {fix}")
    num_declared, directory_bytes = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]
    files_limit = f"datasets are limited to {max_files:,} files"
    if num_declared > max_files:
        raise over_limit(f"The zip holds {num_declared:,} files", files_limit, "MODELHUB_DATASET_MAX_FILES")
    if directory_bytes > max_files * MAX_DIRECTORY_BYTES_PER_FILE:
        raise over_limit(
            f"The zip's file directory takes {format_bytes(directory_bytes)} "
            f"(more than {MAX_DIRECTORY_BYTES_PER_FILE} bytes for each of {max_files:,} files)",
            files_limit,
            "MODELHUB_DATASET_MAX_FILES",
        )
    try:
        archive = zipfile.ZipFile(path)
    except ZIP_READ_ERRORS as exc:
        raise DatasetError(f"Not a readable zip file: {exc}. {fix}") from exc
    infos = archive.infolist()
    unpacked = sum(info.file_size for info in infos)
    if len(infos) > max_files:
        archive.close()
        raise over_limit(f"The zip holds {len(infos):,} files", files_limit, "MODELHUB_DATASET_MAX_FILES")
    if unpacked > max_unpacked:
        archive.close()
        raise over_limit(
            f"The zip unpacks to {format_bytes(unpacked)}",
            f"datasets are limited to {format_bytes(max_unpacked)} unpacked",
            "MODELHUB_DATASET_MAX_UNCOMPRESSED_BYTES",
        )
    from modelhub.ml.errors import MLError
    from modelhub.ml.untrusted import check_zip_members

    try:  # the untrusted-file reader's zip checks: names, duplicates, symlinks, encryption
        check_zip_members(infos, what=f"the dataset '{path.name}'", max_members=max_files, max_unpacked=max_unpacked)
    except MLError as exc:
        archive.close()
        raise DatasetError(str(exc)) from exc
    return archive


# --- .npz ---------------------------------------------------------------------------------


def _read_array_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> ArrayHeader:
    """Read one .npy member's header (a few hundred bytes) and check it; allocate nothing."""
    name = info.filename
    try:
        with archive.open(info) as stream:
            version = np.lib.format.read_magic(stream)
            if version not in NPY_VERSIONS:
                raise DatasetError(f"{name} uses .npy format version {version}, which is not supported. {NPZ_FIX}")
            if version == (1, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
            else:  # 3.0 differs from 2.0 only in encoding field names as UTF-8
                shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
            header_bytes = stream.tell()
    except ZIP_READ_ERRORS as exc:
        raise DatasetError(f"{name} is not a readable .npy array: {exc}. {NPZ_FIX}") from exc
    header = ArrayHeader(member=name, shape=tuple(shape), dtype=dtype, fortran_order=fortran_order)
    if dtype.hasobject:
        raise DatasetError(
            f"{name} holds Python objects (dtype {dtype}), which are stored as pickles and refused. "
            "Save plain numeric arrays, e.g. x.astype('float32')."
        )
    if dtype.itemsize == 0 or dtype.kind == "V":
        raise DatasetError(f"{name} has dtype {dtype.str}, which holds no numbers. Save plain numeric arrays.")
    if any(size < 0 for size in header.shape):
        raise DatasetError(f"{name} declares a negative dimension in shape {header.shape}. {NPZ_FIX}")
    max_bytes = settings.MODELHUB_DATASET_MAX_BYTES_IN_MEMORY
    if header.num_bytes > max_bytes:
        raise over_limit(
            f"{name} declares {header.describe()}",
            f"datasets are limited to {format_bytes(max_bytes)} in memory",
            "MODELHUB_DATASET_MAX_BYTES_IN_MEMORY",
        )
    if name == "labels.npy" and (len(header.shape) != 1 or header.shape[0] > MAX_LABELS):
        raise DatasetError(
            f"labels.npy declares shape {header.shape}; labels must be one name per class, "
            f"at most {MAX_LABELS:,} of them."
        )
    data_bytes = info.file_size - header_bytes
    if data_bytes != header.num_bytes:
        raise DatasetError(
            f"{name} declares {header.describe()} of data but holds {format_bytes(data_bytes)}: the header "
            f"does not match the data (a truncated or altered file). {NPZ_FIX}"
        )
    return header


def npz_array_headers(archive: zipfile.ZipFile) -> dict[str, ArrayHeader]:
    """Return the headers of the dataset arrays in an open .npz, checked against the limits.

    Only each member's .npy header is read, so a header declaring petabytes costs nothing.
    Members other than x, y, x_val, y_val and labels are ignored (never read).

    Args:
        archive: an archive from `open_dataset_zip`.

    Returns:
        {"x": ArrayHeader, ...}: the arrays present, each within the limits, all together too.

    Example:
        with open_dataset_zip(path, fix=NPZ_FIX) as archive:
            npz_array_headers(archive)["x"].shape  # (150, 8)
    """
    headers = {}
    for info in archive.infolist():
        key = info.filename.removesuffix(".npy")
        if key in NPZ_ARRAYS and info.filename.endswith(".npy"):
            headers[key] = _read_array_header(archive, info)
    total = sum(header.num_bytes for header in headers.values())
    max_bytes = settings.MODELHUB_DATASET_MAX_BYTES_IN_MEMORY
    if total > max_bytes:
        parts = ", ".join(f"{header.member} {format_bytes(header.num_bytes)}" for header in headers.values())
        raise over_limit(
            f"The arrays declare {format_bytes(total)} together ({parts})",
            f"datasets are limited to {format_bytes(max_bytes)} in memory",
            "MODELHUB_DATASET_MAX_BYTES_IN_MEMORY",
        )
    return headers


def _all_finite(array: np.ndarray) -> bool:
    """Return whether every value is finite, a block of rows at a time (bounded temporaries)."""
    if not np.issubdtype(array.dtype, np.inexact):
        return True
    rows = max(1, FINITE_CHECK_BLOCK_BYTES // max(1, array[:1].nbytes))
    return all(np.isfinite(array[start : start + rows]).all() for start in range(0, len(array), rows))


def _check_arrays(x: np.ndarray, y: np.ndarray, split: str) -> None:
    if x.ndim == 0 or y.ndim == 0:
        raise DatasetError(f"x{split} and y{split} must be arrays with one row per example, not single values.")
    if len(x) == 0:
        raise DatasetError(f"'{split}' split is empty: x has no rows. Add examples.")
    if len(x) != len(y):
        raise DatasetError(f"x{split} has {len(x)} rows but y{split} has {len(y)}; they must match row for row.")
    if not np.issubdtype(x.dtype, np.number):
        raise DatasetError(f"x{split} must be numeric, got dtype {x.dtype}.")
    if y.dtype.kind not in "biuf":
        raise DatasetError(f"y{split} must hold integer class ids or float values, got dtype {y.dtype}.")
    if not _all_finite(x):
        raise DatasetError(f"x{split} contains NaN or Inf values. Clean or impute them before uploading.")
    if not _all_finite(y):
        raise DatasetError(f"y{split} contains NaN or Inf values.")


def load_npz(path: Path) -> dict:
    """Return {"x", "y", "x_val"?, "y_val"?, "labels"?} from an .npz, never unpickling.

    Every array's header is checked against the limits before any array is read.
    """
    with open_dataset_zip(path, fix=NPZ_FIX) as archive:
        headers = npz_array_headers(archive)
        missing = {"x", "y"} - set(headers)
        if missing:
            found = sorted(name.removesuffix(".npy") for name in archive.namelist() if name.endswith(".npy"))
            raise DatasetError(f"The .npz must hold arrays 'x' and 'y'; missing {sorted(missing)} (found {found}).")
        data = {}
        for key, header in headers.items():
            try:
                with archive.open(header.member) as stream:
                    data[key] = np.lib.format.read_array(stream, allow_pickle=False)
            except ZIP_READ_ERRORS as exc:
                raise DatasetError(f"{header.member} cannot be read: {exc}. {NPZ_FIX}") from exc
    _check_arrays(data["x"], data["y"], "")
    if ("x_val" in data) != ("y_val" in data):
        raise DatasetError("Give both x_val and y_val, or neither.")
    if "x_val" in data:
        _check_arrays(data["x_val"], data["y_val"], "_val")
        if data["x_val"].shape[1:] != data["x"].shape[1:]:
            raise DatasetError(
                f"x_val rows have shape {list(data['x_val'].shape[1:])}, x rows {list(data['x'].shape[1:])}."
            )
    if "labels" in data:
        data["labels"] = [str(label) for label in data["labels"].tolist()]
    return data
