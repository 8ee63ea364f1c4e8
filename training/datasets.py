"""Worker side: validate uploaded datasets and load them as arrays for training.

.npz files are opened with allow_pickle=False (pickles could run code); .zip image folders
are decoded with Pillow, class names from the folder names, resized to the backbone input.
"""

import hashlib
import io
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

from modelhub.artifacts.services import blob_fetch_verified
from modelhub.core.tracked_work import row_finish
from training.models import Dataset

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
MAX_IMAGES = 200_000


class DatasetError(Exception):
    """The dataset cannot be used; the message says what is wrong and how to fix it."""


def _check_arrays(x: np.ndarray, y: np.ndarray, split: str) -> None:
    if len(x) == 0:
        raise DatasetError(f"'{split}' split is empty: x has no rows. Add examples.")
    if len(x) != len(y):
        raise DatasetError(f"x{split} has {len(x)} rows but y{split} has {len(y)}; they must match row for row.")
    if not np.issubdtype(x.dtype, np.number):
        raise DatasetError(f"x{split} must be numeric, got dtype {x.dtype}.")
    if not np.all(np.isfinite(x)):
        raise DatasetError(f"x{split} contains NaN or Inf values. Clean or impute them before uploading.")
    if np.issubdtype(y.dtype, np.floating) and not np.all(np.isfinite(y)):
        raise DatasetError(f"y{split} contains NaN or Inf values.")


def load_npz(path: Path) -> dict:
    """Return {"x", "y", "x_val"?, "y_val"?, "labels"?} from an .npz, never unpickling."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            data = {key: archive[key] for key in archive.files}
    except ValueError as exc:
        raise DatasetError(
            f"The .npz holds object arrays (pickles), which are refused: {exc}. Save plain arrays."
        ) from exc
    except (OSError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"Not a readable .npz file: {exc}. Save with numpy.savez(path, x=..., y=...).") from exc
    missing = {"x", "y"} - set(data)
    if missing:
        raise DatasetError(f"The .npz must hold arrays 'x' and 'y'; missing {sorted(missing)} (found {sorted(data)}).")
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


def _image_members(archive: zipfile.ZipFile) -> list[tuple[str, str]]:
    members = []
    for info in archive.infolist():
        path = PurePosixPath(info.filename)
        if info.is_dir() or path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
            continue
        if path.is_absolute() or ".." in path.parts or len(path.parts) < 2:
            continue
        members.append((info.filename, path.parts[-2]))
    return members


def load_images(path: Path, size: tuple[int, int] | None = None, channels: int = 3) -> dict:
    """Return {"x", "y", "labels"} from a .zip of class folders, resized to `size` (H, W) if given."""
    from PIL import Image

    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise DatasetError(f"Not a readable .zip: {exc}. Zip one folder per class of images.") from exc
    with archive:
        members = _image_members(archive)
        if not members:
            raise DatasetError("The .zip has no images in class folders (e.g. cats/1.png, dogs/2.jpg).")
        if len(members) > MAX_IMAGES:
            raise DatasetError(f"The .zip has {len(members)} images; at most {MAX_IMAGES} are accepted.")
        labels = sorted({label for _, label in members})
        index = {label: i for i, label in enumerate(labels)}
        images, targets = [], []
        for name, label in members:
            try:
                image = Image.open(io.BytesIO(archive.read(name)))
                image = image.convert("RGB" if channels == 3 else "L")
                if size is not None:
                    image = image.resize((size[1], size[0]))
            except Exception as exc:  # Pillow raises many types for bad files
                raise DatasetError(f"Image '{name}' cannot be decoded: {exc}.") from exc
            array = np.asarray(image, dtype=np.float32) / 255.0
            images.append(array if array.ndim == 3 else array[..., None])
            targets.append(index[label])
    if size is None:
        return {"x": None, "y": np.asarray(targets), "labels": labels, "shapes": {a.shape for a in images}}
    return {"x": np.stack(images), "y": np.asarray(targets), "labels": labels}


def dataset_validate(*, dataset_id: int) -> None:
    """Inspect a dataset file; set it ready (with counts, shape, classes) or rejected."""
    dataset = Dataset.objects.filter(pk=dataset_id).select_related("blob").first()
    if dataset is None or dataset.status != Dataset.Status.VALIDATING:
        return
    try:
        with tempfile.TemporaryDirectory(prefix="modelhub-dataset-") as tmp:
            path = blob_fetch_verified(blob=dataset.blob, destination=Path(tmp) / "data")
            if dataset.format == Dataset.Format.NPZ:
                data = load_npz(path)
                x, y = data["x"], data["y"]
                input_shape = list(x.shape[1:])
                x_sha = hashlib.sha256(np.ascontiguousarray(x).tobytes() + str(x.shape).encode()).hexdigest()
                num_validation = len(data["x_val"]) if "x_val" in data else 0
                labels = data.get("labels", [])
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
        outcome = dict(
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
    except DatasetError as exc:
        outcome = dict(status=Dataset.Status.REJECTED, error=str(exc))
    row_finish(dataset, **outcome)


def dataset_arrays(dataset: Dataset, *, input_shape: list[int]) -> dict:
    """Load a ready dataset's arrays for training, images resized to `input_shape` (H, W, C)."""
    with tempfile.TemporaryDirectory(prefix="modelhub-dataset-") as tmp:
        path = blob_fetch_verified(blob=dataset.blob, destination=Path(tmp) / "data")
        if dataset.format == Dataset.Format.NPZ:
            return load_npz(path)
        if len(input_shape) != 3:
            raise DatasetError(f"Image datasets need a backbone with image input (H, W, C); it takes {input_shape}.")
        return load_images(path, size=(input_shape[0], input_shape[1]), channels=input_shape[2])
