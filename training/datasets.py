"""Worker side: validate uploaded datasets and load them as arrays for training.

Every size is checked from headers before anything is decoded or allocated, so a small upload
that declares a huge array or image cannot take a worker down (issue #11): a zip's directory
gives its member count and unpacked size, each .npy member's header its shape and dtype, each
image's header its pixel count. The caps are the MODELHUB_DATASET_* settings, and validation
and the training loader share the same checks.

.npz arrays are read with allow_pickle=False (pickles could run code); .zip image folders are
decoded with Pillow one image at a time, class names from the folder names, resized to the
backbone input.
"""

import contextlib
import hashlib
import logging
import math
import re
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from django.conf import settings

from artifacts.services import blob_fetch_verified
from core.tracked_work import row_finish, run_tracked
from training.models import Dataset

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
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
IMAGE_ZIP_FIX = "Zip one folder per class of images (e.g. cats/1.png, dogs/2.jpg)."
OUT_OF_MEMORY_MESSAGE = (
    "The worker ran out of memory validating this dataset, although it is within the limit of {limit} "
    "in memory (MODELHUB_DATASET_MAX_BYTES_IN_MEMORY). Upload a smaller dataset, or lower the limit "
    "to what workers can hold."
)


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


@dataclass(frozen=True)
class ImageMember:
    """One image of an image zip: its member name, class folder and header size."""

    name: str
    label: str
    width: int
    height: int


def format_bytes(num_bytes: int) -> str:
    """Return a byte count in binary units, e.g. format_bytes(2 * 1024**3) == "2.0 GiB"."""
    value = float(num_bytes)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{num_bytes} bytes" if unit == "bytes" else f"{value:,.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _format_pixels(num_pixels: int) -> str:
    return f"{num_pixels / 1e6:,.1f} megapixels" if num_pixels >= 100_000 else f"{num_pixels:,} pixels"


def _dtype_name(dtype: np.dtype) -> str:
    return dtype.name if dtype.kind in "biufc" else dtype.str


def _over_limit(found: str, limit: str, setting: str, fix: str = "Upload a smaller dataset") -> DatasetError:
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
        raise _over_limit(f"The zip holds {num_declared:,} files", files_limit, "MODELHUB_DATASET_MAX_FILES")
    if directory_bytes > max_files * MAX_DIRECTORY_BYTES_PER_FILE:
        raise _over_limit(
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
        raise _over_limit(f"The zip holds {len(infos):,} files", files_limit, "MODELHUB_DATASET_MAX_FILES")
    if unpacked > max_unpacked:
        archive.close()
        raise _over_limit(
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
        raise _over_limit(
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
        raise _over_limit(
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


# --- Image zips ---------------------------------------------------------------------------


@contextlib.contextmanager
def _pillow_pixel_limit(max_pixels: int) -> Iterator[None]:
    """Make Pillow itself refuse, when opening, any image over `max_pixels` (its bomb check)."""
    from PIL import Image

    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _image_too_large(name: str, found: str) -> DatasetError:
    limit = settings.MODELHUB_DATASET_MAX_IMAGE_PIXELS
    return _over_limit(
        f"Image '{name}' has {found}",
        f"images are limited to {_format_pixels(limit)} each",
        "MODELHUB_DATASET_MAX_IMAGE_PIXELS",
        "Resize the images",
    )


def _image_member_names(archive: zipfile.ZipFile) -> list[tuple[str, str]]:
    members = []
    for info in archive.infolist():
        path = PurePosixPath(info.filename)
        if info.is_dir() or path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
            continue
        if path.is_absolute() or ".." in path.parts or len(path.parts) < 2:
            continue
        members.append((info.filename, path.parts[-2]))
    return members


def image_zip_headers(archive: zipfile.ZipFile) -> list[ImageMember]:
    """Return the images of an open image zip with their sizes, read from headers only.

    No pixel is decoded: each image must be within MODELHUB_DATASET_MAX_IMAGE_PIXELS and all
    together within MODELHUB_DATASET_MAX_TOTAL_PIXELS. Call it inside `_pillow_pixel_limit`.

    Args:
        archive: an archive from `open_dataset_zip`.

    Returns:
        One ImageMember per image in a class folder, in zip order.
    """
    from PIL import Image

    names = _image_member_names(archive)
    if not names:
        raise DatasetError(f"The .zip has no images in class folders. {IMAGE_ZIP_FIX}")
    max_pixels = settings.MODELHUB_DATASET_MAX_IMAGE_PIXELS
    max_total = settings.MODELHUB_DATASET_MAX_TOTAL_PIXELS
    members, total = [], 0
    for name, label in names:
        try:
            with archive.open(name) as stream, Image.open(stream) as image:
                width, height = image.size  # the header only; nothing is decoded
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            declared = re.search(r"\((\d+) pixels\)", str(exc))
            raise _image_too_large(name, _format_pixels(int(declared[1])) if declared else str(exc)) from exc
        except MemoryError:
            raise
        except Exception as exc:  # Pillow raises many types for bad files
            raise DatasetError(f"Image '{name}' cannot be decoded: {exc}.") from exc
        if width * height > max_pixels:
            raise _image_too_large(name, f"{width}x{height} = {_format_pixels(width * height)}")
        total += width * height
        if total > max_total:
            raise _over_limit(
                f"The images hold more than {_format_pixels(total)} together "
                f"(counted up to image {len(members) + 1} of {len(names)}, '{name}')",
                f"datasets are limited to {_format_pixels(max_total)} in all",
                "MODELHUB_DATASET_MAX_TOTAL_PIXELS",
                "Upload fewer or smaller images",
            )
        members.append(ImageMember(name=name, label=label, width=width, height=height))
    return members


def _decode(archive: zipfile.ZipFile, member: ImageMember, mode: str | None, size: tuple[int, int] | None):
    """Decode one image whose header passed `image_zip_headers`; convert and resize it if asked."""
    from PIL import Image

    try:
        with archive.open(member.name) as stream, Image.open(stream) as image:
            image.load()
            if mode is None:
                return None
            converted = image.convert(mode)
            return converted if size is None else converted.resize((size[1], size[0]))
    except MemoryError:
        raise
    except Exception as exc:  # Pillow raises many types for bad files
        raise DatasetError(f"Image '{member.name}' cannot be decoded: {exc}.") from exc


def load_images(path: Path, size: tuple[int, int] | None = None, channels: int = 3) -> dict:
    """Return {"x", "y", "labels"} from a .zip of class folders, resized to `size` (H, W) if given.

    Sizes are checked from the image headers before anything is decoded; images are then decoded
    one at a time. Without `size` (validation) every image is decoded to prove it is readable and
    "x" is None; with it, x is float32 in [0, 1], shape (N, H, W, channels), and must fit in
    MODELHUB_DATASET_MAX_BYTES_IN_MEMORY before it is allocated.
    """
    if channels not in (1, 3):
        raise DatasetError(
            f"Image datasets feed backbones taking 1 (grey) or 3 (RGB) channels; this one takes {channels}."
        )
    with open_dataset_zip(path, fix=IMAGE_ZIP_FIX) as archive:
        with _pillow_pixel_limit(settings.MODELHUB_DATASET_MAX_IMAGE_PIXELS):
            members = image_zip_headers(archive)
            labels = sorted({member.label for member in members})
            index = {label: i for i, label in enumerate(labels)}
            y = np.asarray([index[member.label] for member in members])
            if size is None:
                for member in members:
                    _decode(archive, member, None, None)
                return {"x": None, "y": y, "labels": labels}
            height, width = size
            num_bytes = len(members) * height * width * channels * np.dtype(np.float32).itemsize
            max_bytes = settings.MODELHUB_DATASET_MAX_BYTES_IN_MEMORY
            if num_bytes > max_bytes:
                raise _over_limit(
                    f"{len(members):,} images at {height}x{width}x{channels} float32 take {format_bytes(num_bytes)}",
                    f"datasets are limited to {format_bytes(max_bytes)} in memory",
                    "MODELHUB_DATASET_MAX_BYTES_IN_MEMORY",
                )
            x = np.empty((len(members), height, width, channels), dtype=np.float32)
            for i, member in enumerate(members):
                image = _decode(archive, member, "RGB" if channels == 3 else "L", size)
                x[i] = np.asarray(image, dtype=np.float32).reshape(height, width, channels)
    x /= 255.0
    return {"x": x, "y": y, "labels": labels}


# --- Validation and loading ---------------------------------------------------------------


def _x_sha256(x: np.ndarray) -> str:
    """Return sha256(x's C-order bytes + str(shape)) without copying a contiguous x."""
    digest = hashlib.sha256(np.ascontiguousarray(x))
    digest.update(str(x.shape).encode())
    return digest.hexdigest()


def _describe(dataset: Dataset) -> dict:
    """Load and check the dataset's file; return the fields of a ready row or raise DatasetError."""
    with tempfile.TemporaryDirectory(prefix="modelhub-dataset-") as tmp:
        path = blob_fetch_verified(blob=dataset.blob, destination=Path(tmp) / "data")
        if dataset.format == Dataset.Format.NPZ:
            data = load_npz(path)
            x, y = data["x"], data["y"]
            input_shape = list(x.shape[1:])
            x_sha = _x_sha256(x)
            num_validation = len(data["x_val"]) if "x_val" in data else 0
            labels = data.get("labels", [])
            del data, x
        else:
            data = load_images(path)
            y, labels, input_shape, num_validation = data["y"], data["labels"], None, 0
            x_sha = dataset.blob.sha256
    if np.issubdtype(y.dtype, np.integer):
        if y.ndim != 1 or y.min() < 0:
            raise DatasetError("Class labels y must be a 1-D array of integers 0..K-1.")
        num_classes = max(int(y.max()) + 1, len(labels))
        if labels and len(labels) < int(y.max()) + 1:
            raise DatasetError(f"'labels' names {len(labels)} classes but y goes up to {int(y.max())}.")
        histogram = {str(k): int(v) for k, v in zip(*np.unique(y, return_counts=True), strict=True)}
        target = "classes"
    else:
        num_classes, histogram, target = None, {}, "values"
    return dict(
        status=Dataset.Status.READY,
        num_examples=len(y),
        num_validation=num_validation,
        input_shape=input_shape,
        num_classes=num_classes,
        class_histogram=histogram,
        labels=labels,
        target=target,
        x_sha256=x_sha,
    )


def dataset_validate(*, dataset_id: int) -> Dataset | None:
    """Inspect a dataset file; set it ready (with counts, shape, classes) or rejected.

    Every outcome ends the row and nothing escapes to the Celery task (a MemoryError escaping a
    task ends the worker): a bad or over-limit file is rejected with its reason, a MemoryError
    with an out-of-memory message, anything else by run_tracked's guard. A redelivery of a
    claimed row (its worker died) is recorded as "worker lost", never validated again.
    """
    return run_tracked(Dataset, dataset_id, _validate)


def _validate(dataset: Dataset) -> None:
    try:
        outcome = _describe(dataset)
    except DatasetError as exc:
        outcome = dict(status=Dataset.Status.REJECTED, error=str(exc))
    except MemoryError:
        logger.exception("dataset %s validation ran out of memory", dataset.pk)
        limit = format_bytes(settings.MODELHUB_DATASET_MAX_BYTES_IN_MEMORY)
        outcome = dict(status=Dataset.Status.REJECTED, error=OUT_OF_MEMORY_MESSAGE.format(limit=limit))
    row_finish(dataset, **outcome)


def dataset_arrays(dataset: Dataset, *, input_shape: list[int]) -> dict:
    """Load a ready dataset's arrays for training, images resized to `input_shape` (H, W, C).

    The same header checks as validation run first, so nothing over the limits is allocated.
    """
    with tempfile.TemporaryDirectory(prefix="modelhub-dataset-") as tmp:
        path = blob_fetch_verified(blob=dataset.blob, destination=Path(tmp) / "data")
        if dataset.format == Dataset.Format.NPZ:
            return load_npz(path)
        if len(input_shape) != 3:
            raise DatasetError(f"Image datasets need a backbone with image input (H, W, C); it takes {input_shape}.")
        return load_images(path, size=(input_shape[0], input_shape[1]), channels=input_shape[2])
