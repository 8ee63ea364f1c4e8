"""Worker side: validate an uploaded dataset (ready or rejected, with its counts and classes),
and load a ready one as arrays for training.

The file's checks and decoding are training.work.dataset_zips (.npz) and
training.work.image_zips (class folders of images): sizes are checked from headers before
anything is decoded, so validation and the training loader refuse the same files.
"""

import hashlib
import logging
import tempfile
from pathlib import Path

import numpy as np
from django.conf import settings

from artifacts.services import blob_fetch_verified
from core.tracked_work import row_finish, run_tracked
from training.models import Dataset
from training.work.dataset_zips import DatasetError, format_bytes, load_npz
from training.work.image_zips import load_images

logger = logging.getLogger(__name__)

OUT_OF_MEMORY_MESSAGE = (
    "The worker ran out of memory validating this dataset, although it is within the limit of {limit} "
    "in memory (MODELHUB_DATASET_MAX_BYTES_IN_MEMORY). Upload a smaller dataset, or lower the limit "
    "to what workers can hold."
)


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
