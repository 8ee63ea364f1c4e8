"""Worker side: image zips (one folder per class) checked from headers, then decoded one at a time.

Each image's header gives its pixel count, checked against MODELHUB_DATASET_MAX_IMAGE_PIXELS
(and all together against MODELHUB_DATASET_MAX_TOTAL_PIXELS) before any pixel is decoded;
Pillow decodes one image at a time, class names come from the folder names, and images are
resized to the backbone input. The zip itself is opened by training.work.dataset_zips.
"""

import contextlib
import re
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from django.conf import settings

from training.work.dataset_zips import DatasetError, format_bytes, open_dataset_zip, over_limit

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
IMAGE_ZIP_FIX = "Zip one folder per class of images (e.g. cats/1.png, dogs/2.jpg)."


@dataclass(frozen=True)
class ImageMember:
    """One image of an image zip: its member name, class folder and header size."""

    name: str
    label: str
    width: int
    height: int


def _format_pixels(num_pixels: int) -> str:
    return f"{num_pixels / 1e6:,.1f} megapixels" if num_pixels >= 100_000 else f"{num_pixels:,} pixels"


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
    return over_limit(
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
            raise over_limit(
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
                raise over_limit(
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
