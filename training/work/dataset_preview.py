"""Worker side: what a validated dataset looks like, stored in `Dataset.preview` and its inputs' hash.

The preview is what a member checks before training: the columns with their kinds, the row
count, the first rows (long cells cut short) and the label distribution. It is computed once at
validation from the arrays of the data contract (training.work.datasets.dataset_arrays), the
same for .npz files and tables; which ready backbones a dataset fits is computed when read
(training.selectors), since backbones come and go.
"""

import hashlib
import reprlib

import numpy as np

PREVIEW_ROWS = 5
PREVIEW_CHARS = 80
PREVIEW_VALUES = 8
PREVIEW_DEPTH = 3  # lists inside lists shown this deep; deeper ones as cut text
# repr() of an object cell (a JSON object, bytes) that stops early instead of building it whole.
_SHORT_REPR = reprlib.Repr(
    maxlevel=PREVIEW_DEPTH, maxdict=PREVIEW_VALUES, maxlist=PREVIEW_VALUES, maxtuple=PREVIEW_VALUES,
    maxstring=PREVIEW_CHARS, maxother=PREVIEW_CHARS, maxlong=PREVIEW_CHARS,
)  # fmt: skip


def _cut_text(text: str) -> str:
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "…"


def preview_cell(value, *, depth: int = 0) -> object:
    """Return one cell as JSON, cut short: strings to PREVIEW_CHARS, lists and arrays to PREVIEW_VALUES
    values (the values inside cut the same way), objects and anything else as their cut repr().

    Example:
        >>> preview_cell([[1] * 10, {"a": [2] * 10}])
        [[1, 1, 1, 1, 1, 1, 1, 1, '…'], "{'a': [2, 2, 2, 2, 2, 2, 2, 2, ...]}"]
    """
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[: PREVIEW_VALUES + 1].tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return _cut_text(value)
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, list | tuple) and depth < PREVIEW_DEPTH:
        shown = [preview_cell(item, depth=depth + 1) for item in value[:PREVIEW_VALUES]]
        return shown + ["…"] if len(value) > PREVIEW_VALUES else shown
    return _cut_text(_SHORT_REPR.repr(value))


def label_distribution(y: np.ndarray, labels: list[str], target: str) -> dict:
    """Return {class name: count} for classes, or {"min", "max", "mean"} for regression values."""
    if target != "classes":
        return {"min": float(np.min(y)), "max": float(np.max(y)), "mean": float(np.mean(y))}
    ids, counts = np.unique(y, return_counts=True)
    return {
        (labels[i] if i < len(labels) else str(i)): int(count) for i, count in zip(ids.tolist(), counts, strict=True)
    }


def build_preview(
    *,
    inputs: dict[str, np.ndarray],
    y: np.ndarray,
    labels: list[str],
    target: str,
    num_validation: int,
    columns: list[dict],
    label_column: str,
    label_order: str,
    rows: list[dict] | None = None,
) -> dict:
    """Return the stored preview of a dataset.

    Args:
        inputs: {column or array name: array}, one row per example (training rows first).
        y: the labels, as ids (classes) or values.
        labels: class names by id.
        target: "classes" or "values".
        num_validation: how many examples are held out for validation.
        columns: [{"name", "kind"}] for every column the file has (used or not).
        label_column: the column (or array) holding the labels.
        label_order: how class names map to ids ("sorted", "first_seen", "given" or "ids").
        rows: the first rows as read from a table (every column); by default built from `inputs`.

    Returns:
        {"columns", "num_rows", "num_validation", "rows", "label_column", "label_order",
        "label_distribution"}.
    """
    if rows is None:
        rows = []
        for index in range(min(PREVIEW_ROWS, len(y))):
            row = {name: array[index] for name, array in inputs.items()}
            label = y[index].item()
            row[label_column] = labels[label] if target == "classes" and label < len(labels) else label
            rows.append(row)
    rows = [{name: preview_cell(value) for name, value in row.items()} for row in rows[:PREVIEW_ROWS]]
    return {
        "columns": columns,
        "num_rows": int(len(y)) + num_validation,
        "num_validation": num_validation,
        "rows": rows,
        "label_column": label_column,
        "label_order": label_order,
        "label_distribution": label_distribution(y, labels, target),
    }


def _array_digest(array: np.ndarray) -> str:
    if array.dtype == object:  # strings: length-prefixed UTF-8, so ["ab", "c"] != ["a", "bc"]
        digest = hashlib.sha256()
        for text in array.reshape(-1).tolist():
            encoded = str(text).encode("utf-8", "surrogatepass")
            digest.update(len(encoded).to_bytes(8, "little") + encoded)
    else:
        digest = hashlib.sha256(np.ascontiguousarray(array))
    digest.update(str(array.shape).encode())
    return digest.hexdigest()


def inputs_sha256(x) -> str:
    """Return the hash identifying a dataset's inputs (train_heads jobs share one set of inputs).

    A single numeric array hashes as before named inputs existed: sha256(C-order bytes +
    str(shape)); named inputs hash their names with each array's hash, in name order.
    """
    if not isinstance(x, dict):
        return _array_digest(x)
    digest = hashlib.sha256()
    for name in sorted(x):
        digest.update(name.encode() + b"\0" + _array_digest(x[name]).encode())
    return digest.hexdigest()
