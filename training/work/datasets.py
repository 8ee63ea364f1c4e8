"""Worker side: validate an uploaded dataset (ready or rejected, with its counts and classes),
and load a ready one as arrays for training.

The file's checks and decoding are training.work.dataset_zips (.npz),
training.work.tables (CSV, JSON Lines, Parquet mapped by the dataset's `columns`) and
training.work.image_zips (class folders of images): sizes are checked before anything is
decoded, so validation and the training loader refuse the same files. Validation also stores
the dataset's `inputs` (the data contract) and its `preview` (training.work.dataset_preview).
"""

import logging
import tempfile
from pathlib import Path

import numpy as np
from django.conf import settings

from artifacts.services import blob_fetch_verified
from core.tracked_work import row_finish, run_tracked
from training.models import Dataset
from training.work.dataset_preview import build_preview, inputs_sha256
from training.work.dataset_zips import DatasetError, describe_input, format_bytes, input_arrays, load_npz
from training.work.image_zips import load_images

logger = logging.getLogger(__name__)

OUT_OF_MEMORY_MESSAGE = (
    "The worker ran out of memory validating this dataset, although it is within the limit of {limit} "
    "in memory (MODELHUB_DATASET_MAX_BYTES_IN_MEMORY). Upload a smaller dataset, or lower the limit "
    "to what workers can hold."
)


def _load(dataset: Dataset, path: Path) -> dict:
    """Return the contract's arrays of an .npz or a table, with how the table's columns were used."""
    if dataset.format == Dataset.Format.NPZ:
        data = load_npz(path)
        names = sorted(input_arrays(data["x"]))
        data["columns_used"] = {}
        data["table_columns"] = [{"name": "y", "kind": "label"}]
        data["label_column"] = "y"
        data["label_order"] = "given" if "labels" in data else "ids"
        data["preview_names"] = {name: name if name == "x" else f"x_{name}" for name in names}
        return data
    from training.work.table_columns import load_table

    return load_table(path, fmt=dataset.format, columns=dataset.columns, filename=dataset.filename or path.name)


def _describe(dataset: Dataset) -> dict:
    """Load and check the dataset's file; return the fields of a ready row or raise DatasetError."""
    fields = {}
    with tempfile.TemporaryDirectory(prefix="modelhub-dataset-") as tmp:
        path = blob_fetch_verified(blob=dataset.blob, destination=Path(tmp) / "data")
        if dataset.format == Dataset.Format.IMAGES:
            data = load_images(path)
            y, labels, num_validation = data["y"], data["labels"], 0
            fields = dict(input_shape=None, x_sha256=dataset.blob.sha256, inputs=[])
        else:
            data = _load(dataset, path)
            y, labels = data["y"], data.get("labels", [])
            arrays = input_arrays(data["x"])
            inputs = [describe_input(name, array) for name, array in arrays.items()]
            num_validation = len(data["y_val"]) if "y_val" in data else 0
            fields = dict(
                inputs=inputs,
                input_shape=inputs[0]["shape"] if len(inputs) == 1 else None,
                x_sha256=inputs_sha256(data["x"]),
                columns=data["columns_used"] or dataset.columns,
            )
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
    if dataset.format != Dataset.Format.IMAGES:
        preview_names = data.get("preview_names") or {name: name for name in arrays}
        columns = [
            {"name": preview_names[entry["name"]], "kind": entry["kind"], "shape": entry["shape"]} for entry in inputs
        ]
        fields["preview"] = build_preview(
            inputs={preview_names[name]: array for name, array in arrays.items()},
            y=y,
            labels=labels,
            target=target,
            num_validation=num_validation,
            columns=data.get("all_columns") or columns + data["table_columns"],
            label_column=data["label_column"],
            label_order=data["label_order"],
            rows=data.get("preview_rows"),
        )
    return dict(
        status=Dataset.Status.READY,
        num_examples=len(y),
        num_validation=num_validation,
        num_classes=num_classes,
        class_histogram=histogram,
        labels=labels,
        target=target,
        **fields,
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

    Returns {"x", "y", "labels", "x_val"?, "y_val"?}: "x" is one array (the unnamed input)
    or {input name: array}; strings are object arrays of str, shape (n,); table numbers are
    float32 and token ids int32 (n, L), zero-padded (.npz arrays keep their stored dtype).
    The same checks as validation run first, so nothing over the limits is allocated.
    """
    with tempfile.TemporaryDirectory(prefix="modelhub-dataset-") as tmp:
        path = blob_fetch_verified(blob=dataset.blob, destination=Path(tmp) / "data")
        if dataset.format != Dataset.Format.IMAGES:
            data = _load(dataset, path)
            keys = ("x", "y", "labels", "x_val", "y_val")
            return {key: data[key] for key in keys if key in data} | {"labels": data.get("labels", [])}
        if len(input_shape) != 3:
            raise DatasetError(f"Image datasets need a backbone with image input (H, W, C); it takes {input_shape}.")
        return load_images(path, size=(input_shape[0], input_shape[1]), channels=input_shape[2])
