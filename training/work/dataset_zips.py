"""Worker side: dataset zips (.npz and image zips) opened within the limits, and .npz arrays read.

An .npz holds one unnamed input `x` or named inputs `x_<name>` (validation `x_val` / `x_val_<name>`),
numeric or string ('<U' arrays; strings come back as object arrays of Python str, shape (n,)).

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
NAMED_INPUT_PREFIX, NAMED_VALIDATION_PREFIX = "x_", "x_val_"
# A '<U' array becomes one Python str per row; each takes up to its characters' bytes plus this.
STR_OBJECT_BYTES = 80
MAX_LABELS = 100_000
# A zip directory entry takes 46 bytes plus its name and extra fields; this allows long paths.
MAX_DIRECTORY_BYTES_PER_FILE = 1024
# The finiteness check looks at this many bytes of x at a time (bounded temporary memory).
FINITE_CHECK_BLOCK_BYTES = 64 * 1024**2
NPY_VERSIONS = {(1, 0), (2, 0), (3, 0)}
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
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
        """Return the bytes the array's data takes in the file (exact integer, never overflows)."""
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def memory_bytes(self) -> int:
        """Return the bytes it takes loaded: strings also become one Python str per element."""
        if self.dtype.kind == "U":
            return math.prod(self.shape) * (2 * self.dtype.itemsize + STR_OBJECT_BYTES)
        return self.num_bytes

    def describe(self) -> str:
        """Return e.g. "shape (1099511627776, 1024) float32 = 4.0 PiB"."""
        strings = " (as Python strings)" if self.dtype.kind == "U" else ""
        return f"shape {self.shape} {_dtype_name(self.dtype)} = {format_bytes(self.memory_bytes)}{strings}"


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
    if dtype.kind == "S":
        raise DatasetError(
            f"{name} holds byte strings (dtype {dtype.str}); text must be str arrays. Save x.astype(str)."
        )
    if dtype.itemsize == 0 or dtype.kind == "V":
        raise DatasetError(f"{name} has dtype {dtype.str}, which holds no numbers or text. Save numeric or str arrays.")
    if any(size < 0 for size in header.shape):
        raise DatasetError(f"{name} declares a negative dimension in shape {header.shape}. {NPZ_FIX}")
    max_bytes = settings.MODELHUB_DATASET_MAX_BYTES_IN_MEMORY
    if header.memory_bytes > max_bytes:
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
    Members other than x, y, x_val, y_val, labels and named inputs x_<name> are ignored (never read).

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
        if info.filename.endswith(".npy") and (key in NPZ_ARRAYS or key.startswith(NAMED_INPUT_PREFIX)):
            headers[key] = _read_array_header(archive, info)
    total = sum(header.memory_bytes for header in headers.values())
    max_bytes = settings.MODELHUB_DATASET_MAX_BYTES_IN_MEMORY
    if total > max_bytes:
        parts = ", ".join(f"{header.member} {format_bytes(header.memory_bytes)}" for header in headers.values())
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


def check_labels(y: np.ndarray, num_rows: int, split: str, inputs: str = "") -> None:
    """Check y{split}: one integer class id or float value per row, all finite."""
    if y.ndim == 0:
        raise DatasetError(f"y{split} must be an array with one label per example, not a single value.")
    if len(y) != num_rows:
        raise DatasetError(
            f"{inputs or 'Each input' + split} has {num_rows} rows but y{split} has {len(y)}; "
            "they must match row for row."
        )
    if y.dtype.kind not in "biuf":
        raise DatasetError(f"y{split} must hold integer class ids or float values, got dtype {y.dtype}.")
    if not _all_finite(y):
        raise DatasetError(f"y{split} contains NaN or Inf values.")


def check_input(name: str, array: np.ndarray, split: str) -> np.ndarray:
    """Check one input array of an .npz; return it, strings as an object array of str, shape (n,)."""
    if array.ndim == 0:
        raise DatasetError(f"{name} must be an array with one row per example, not a single value.")
    if len(array) == 0:
        raise DatasetError(f"'{split or 'train'}' split is empty: {name} has no rows. Add examples.")
    if array.dtype.kind == "U":
        if array.ndim > 2 or (array.ndim == 2 and array.shape[1] != 1):
            raise DatasetError(
                f"{name} holds strings of shape {list(array.shape)}; text inputs take one string per row, "
                "shape (n,) or (n, 1)."
            )
        return array.reshape(-1).astype(object)
    if array.dtype.kind not in "biuf":
        raise DatasetError(f"{name} must be numeric or str, got dtype {array.dtype}.")
    if array.dtype.kind in "iu" and array.size and (array.min() < INT32_MIN or array.max() > INT32_MAX):
        raise DatasetError(
            f"{name} holds integers outside the int32 range; models take int32 token ids and float32 numbers."
        )
    if not _all_finite(array):
        raise DatasetError(f"{name} contains NaN or Inf values. Clean or impute them before uploading.")
    return array


def describe_input(name: str, array: np.ndarray) -> dict:
    """Return the data contract's entry for one input: {"name", "kind", "shape", "dtype"}.

    Strings are "string"; integer arrays of shape (n, L) are "token_ids" (int32); any other
    numeric array is "number" (float32). The shape is one row's, e.g. [] for one string per row.
    """
    shape = list(array.shape[1:])
    if array.dtype == object or array.dtype.kind == "U":
        return {"name": name, "kind": "string", "shape": shape, "dtype": "string"}
    if array.dtype.kind in "iu" and array.ndim == 2:
        return {"name": name, "kind": "token_ids", "shape": shape, "dtype": "int32"}
    return {"name": name, "kind": "number", "shape": shape, "dtype": "float32"}


def input_arrays(x) -> dict[str, np.ndarray]:
    """Return {name: array} for a dataset's x: the unnamed input is named "x"."""
    return dict(x) if isinstance(x, dict) else {"x": x}


def _inputs_of(data: dict, split: str) -> dict[str, np.ndarray] | np.ndarray | None:
    """Return the split's unnamed x, its named arrays {name: array}, or None when it has neither."""
    plain = "x" + split
    if split:
        named = {key[len(NAMED_VALIDATION_PREFIX) :]: key for key in data if key.startswith(NAMED_VALIDATION_PREFIX)}
    else:
        named = {
            key[len(NAMED_INPUT_PREFIX) :]: key
            for key in data
            if key.startswith(NAMED_INPUT_PREFIX) and key != "x_val" and not key.startswith(NAMED_VALIDATION_PREFIX)
        }
    if plain in data and named:
        raise DatasetError(
            f"The .npz holds both '{plain}' and named inputs {sorted(named.values())}; give one unnamed input "
            f"'{plain}' or named inputs x{split}_<name>, not both."
        )
    if "" in named:
        raise DatasetError(f"An input array is named '{named['']}' with no input name; name it x{split}_<input name>.")
    if plain in data:
        return check_input(plain, data[plain], split)
    if named:
        return {name: check_input(key, data[key], split) for name, key in sorted(named.items())}
    return None


def _check_split(x, y: np.ndarray, split: str) -> None:
    rows = {name: len(array) for name, array in input_arrays(x).items()}
    if len(set(rows.values())) > 1:
        raise DatasetError(f"The inputs{split} have different row counts {rows}; they must match row for row.")
    check_labels(y, next(iter(rows.values())), split, inputs="" if isinstance(x, dict) else f"x{split}")


def load_npz(path: Path) -> dict:
    """Return {"x", "y", "x_val"?, "y_val"?, "labels"?} from an .npz, never unpickling.

    "x" is the unnamed input array `x`, or {name: array} for named arrays `x_<name>`; string
    arrays come back as object arrays of Python str, shape (n,). Every array's header is
    checked against the limits before any array is read.

    Example:
        numpy.savez(path, x_text=numpy.array(["good", "bad"]), y=numpy.array([1, 0]))
        load_npz(path)["x"]  # {"text": array(["good", "bad"], dtype=object)}
    """
    with open_dataset_zip(path, fix=NPZ_FIX) as archive:
        headers = npz_array_headers(archive)
        if "y" not in headers or not any(key == "x" or key.startswith(NAMED_INPUT_PREFIX) for key in headers):
            found = sorted(name.removesuffix(".npy") for name in archive.namelist() if name.endswith(".npy"))
            raise DatasetError(
                "The .npz must hold arrays 'x' and 'y' (or, for named inputs, x_<input name> arrays such as "
                f"x_text and x_token_ids instead of 'x'); found {found}. {NPZ_FIX}"
            )
        raw = {}
        for key, header in headers.items():
            try:
                with archive.open(header.member) as stream:
                    raw[key] = np.lib.format.read_array(stream, allow_pickle=False)
            except ZIP_READ_ERRORS as exc:
                raise DatasetError(f"{header.member} cannot be read: {exc}. {NPZ_FIX}") from exc
    data = {"x": _inputs_of(raw, ""), "y": raw["y"]}
    if data["x"] is None:
        raise DatasetError("The .npz holds 'x_val' inputs but no training inputs 'x' or x_<name>.")
    _check_split(data["x"], data["y"], "")
    x_val = _inputs_of(raw, "_val")
    if (x_val is None) != ("y_val" not in raw):
        raise DatasetError("Give both the validation inputs (x_val or x_val_<name>) and y_val, or neither.")
    if x_val is not None:
        _check_split(x_val, raw["y_val"], "_val")
        train, val = input_arrays(data["x"]), input_arrays(x_val)
        if isinstance(x_val, dict) != isinstance(data["x"], dict) or set(train) != set(val):
            raise DatasetError(
                f"The validation inputs {sorted(val)} must be the training inputs {sorted(train)}: "
                "x_val for x, x_val_<name> for each x_<name>."
            )
        for name in train:
            if val[name].shape[1:] != train[name].shape[1:]:
                raise DatasetError(
                    f"Validation rows of input '{name}' have shape {list(val[name].shape[1:])}, "
                    f"training rows {list(train[name].shape[1:])}."
                )
        data["x_val"], data["y_val"] = x_val, raw["y_val"]
    if "labels" in raw:
        data["labels"] = [str(label) for label in raw["labels"].tolist()]
    return data
