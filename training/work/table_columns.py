"""Worker side: turn a table's columns into the data contract's arrays, as the `columns` mapping says.

training.work.tables reads the rows; here the mapping (training.specs.columns) is resolved
against the file's columns, the cells in use are collected (their memory counted against
MODELHUB_DATASET_MAX_BYTES_IN_MEMORY as they come) and each column becomes one kind:
strings (object arrays of str), numbers (float32, finite), token-id lists (int32, padded
with 0 to the longest row) or labels (class names -> ids in sorted or first-seen order,
integers as class ids, floats as regression values). Validation rows are split off last.
"""

import json
import math
import re
import sys
from pathlib import Path

import numpy as np
from django.conf import settings

from core.errors import ValidationError
from core.json_bounded import json_loads_bounded
from training.specs.columns import columns_read
from training.work.dataset_zips import INT32_MAX, MAX_LABELS, DatasetError, format_bytes, over_limit
from training.work.tables import Table, open_table

INTEGER_TEXT = re.compile(r"^\s*[+-]?\d+\s*$")
CELL_OVERHEAD_BYTES = 64  # a Python object and the list slot holding it
LIST_ITEM_BYTES = 36  # one value in a list cell: a float or non-small int object (24-32 B) and its slot
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _found(cell) -> str:
    text = repr(cell)
    return text if len(text) <= 60 else text[:57] + "..."


class Collector:
    """The cells of the columns in use, with where each row came from, within the memory limit."""

    def __init__(self, table: Table, columns: list[str]):
        self.table, self.columns = table, columns
        self.cells = {name: [] for name in columns}
        self.locations: list[str] = []
        self.num_bytes = 0

    def read(self) -> None:
        max_bytes = settings.MODELHUB_DATASET_MAX_BYTES_IN_MEMORY
        for location, row in self.table.rows(self.columns):
            self.locations.append(location)
            for name, cell in row.items():
                self.num_bytes += CELL_OVERHEAD_BYTES + self._cell_bytes(name, cell)
                self.cells[name].append(cell)
            if self.num_bytes > max_bytes:
                raise over_limit(
                    f"{self.table.where(location)}: the columns in use take more than {format_bytes(max_bytes)} so far",
                    f"datasets are limited to {format_bytes(max_bytes)} in memory",
                    "MODELHUB_DATASET_MAX_BYTES_IN_MEMORY",
                )
        if not self.locations:
            raise DatasetError(
                f"'{self.table.filename}' has a header but no rows; expected one row per example; "
                f"{self.table.columns_text()}."
            )

    def _cell_bytes(self, column: str, cell) -> int:
        """Return what a cell costs in memory; refuse an object or a nested list as soon as it is read."""
        if isinstance(cell, str):
            return sys.getsizeof(cell)
        if isinstance(cell, dict):
            raise self.refuse(-1, column, "text, a number, a list of token ids or a label (not a JSON object)", cell)
        if not isinstance(cell, list):
            return 0
        types = set(map(type, cell))
        if list in types or dict in types:
            raise self.refuse(-1, column, "a flat list of token ids (integers), with no nested lists or objects", cell)
        strings = sum(sys.getsizeof(item) for item in cell if isinstance(item, str)) if str in types else 0
        return sys.getsizeof(cell) + len(cell) * LIST_ITEM_BYTES + strings

    def refuse(self, index: int, column: str, expected: str, cell, why: str = "") -> DatasetError:
        return DatasetError(
            f"{self.table.where(self.locations[index], column)}: expected {expected}, found {_found(cell)}"
            f"{f' ({why})' if why else ''}; {self.table.columns_text()}."
        )


# --- Inputs ---------------------------------------------------------------------------------


def _number(collector: Collector, column: str, index: int, cell) -> float:
    if isinstance(cell, str) and not collector.table.typed:
        try:
            value = float(cell)
        except ValueError:
            raise collector.refuse(index, column, "a number", cell) from None
    elif isinstance(cell, int | float) and not isinstance(cell, bool):
        value = float(cell)
    else:
        raise collector.refuse(index, column, "a number", cell)
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        raise collector.refuse(index, column, "a finite number (float32); clean or impute it", cell)
    return value


def _token_ids(collector: Collector, column: str, index: int, cell) -> list[int]:
    expected = "a list of token ids (a JSON array of integers >= 0, e.g. [101, 2009, 102])"
    if isinstance(cell, str) and not collector.table.typed:
        try:
            cell = json_loads_bounded(cell, max_depth=1, what="a JSON array with no nested lists")
        except ValidationError as exc:
            raise collector.refuse(index, column, expected, cell, why=exc.message.rstrip(".")) from None
    if not isinstance(cell, list):
        raise collector.refuse(index, column, expected, cell)
    for token in cell:
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token <= INT32_MAX:
            raise collector.refuse(index, column, expected + f" up to {INT32_MAX}", token)
    return cell


def _infer_kind(collector: Collector, column: str) -> str:
    """Return "string", "number" or "token_ids" for an input column, from its cells."""
    cells = collector.cells[column]
    if collector.table.typed:
        first = next((cell for cell in cells if cell is not None), None)
        if isinstance(first, str):
            return "string"
        if isinstance(first, list):
            return "token_ids"
        if isinstance(first, int | float) and not isinstance(first, bool):
            return "number"
        raise collector.refuse(0, column, "text, a number or a list of token ids", first)
    stripped = (cell.strip() for cell in cells)
    if all(text.startswith("[") for text in stripped):
        return "token_ids"
    if all(_is_number_text(cell) for cell in cells):
        return "number"
    return "string"


def _is_number_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _input_array(collector: Collector, columns: str | list[str]) -> tuple[np.ndarray, str]:
    """Return one input's array and kind; a list of columns is one float32 vector per row."""
    if isinstance(columns, list):
        array = np.empty((len(collector.locations), len(columns)), dtype=np.float32)
        for position, column in enumerate(columns):
            for index, cell in enumerate(collector.cells[column]):
                array[index, position] = _number(collector, column, index, cell)
        return array, "number"
    column = columns
    kind = _infer_kind(collector, column)
    cells = collector.cells[column]
    if kind == "number":
        return np.asarray([_number(collector, column, i, cell) for i, cell in enumerate(cells)], np.float32), kind
    if kind == "string":
        for index, cell in enumerate(cells):
            if not isinstance(cell, str):
                raise collector.refuse(index, column, "text (a string), like the first row", cell)
        array = np.empty(len(cells), dtype=object)
        array[:] = cells
        return array, kind
    rows = [_token_ids(collector, column, i, cell) for i, cell in enumerate(cells)]
    length = max(len(row) for row in rows)
    if length == 0:
        raise collector.refuse(0, column, "token ids (every row's list is empty)", cells[0])
    max_bytes = settings.MODELHUB_DATASET_MAX_BYTES_IN_MEMORY
    if len(rows) * length * 4 > max_bytes:
        raise over_limit(
            f"'{collector.table.filename}' column '{column}': {len(rows):,} rows padded to the longest list "
            f"({length:,} token ids) take {format_bytes(len(rows) * length * 4)}",
            f"datasets are limited to {format_bytes(max_bytes)} in memory",
            "MODELHUB_DATASET_MAX_BYTES_IN_MEMORY",
        )
    array = np.zeros((len(rows), length), dtype=np.int32)
    for index, row in enumerate(rows):
        array[index, : len(row)] = row
    return array, kind


# --- Labels ---------------------------------------------------------------------------------


def _labels(collector: Collector, column: str, order: str) -> tuple[np.ndarray, list[str], str]:
    """Return (y, class names, how names became ids) for the label column."""
    cells = collector.cells[column]
    for index, cell in enumerate(cells):
        if cell is None or (isinstance(cell, str) and not cell.strip()) or isinstance(cell, list | dict):
            raise collector.refuse(index, column, "a label (a class name, a class id or a value)", cell)
    if collector.table.typed:
        if all(isinstance(cell, int) and not isinstance(cell, bool) for cell in cells):
            return _class_ids(collector, column, [int(cell) for cell in cells])
        if all(isinstance(cell, int | float) and not isinstance(cell, bool) for cell in cells):
            return _values(collector, column, cells)
        names = [cell if isinstance(cell, str) else json.dumps(cell) for cell in cells]
    else:
        if all(INTEGER_TEXT.match(cell) for cell in cells):
            return _class_ids(collector, column, [_integer(collector, column, i, cell) for i, cell in enumerate(cells)])
        if all(_is_number_text(cell) for cell in cells):
            return _values(collector, column, cells)
        names = cells
    classes = sorted(set(names)) if order == "sorted" else list(dict.fromkeys(names))
    if len(classes) > MAX_LABELS:
        raise DatasetError(
            f"'{collector.table.filename}' column '{column}' holds {len(classes):,} class names; at most "
            f"{MAX_LABELS:,}. Is it the label column?"
        )
    index = {name: i for i, name in enumerate(classes)}
    return np.asarray([index[name] for name in names], dtype=np.int64), classes, order


def _integer(collector: Collector, column: str, index: int, text: str) -> int:
    """Return a class id written as text; one of thousands of digits is refused, not a crash."""
    if len(text.strip().lstrip("+-")) > 18:
        raise collector.refuse(index, column, f"a class id from 0 to {MAX_LABELS - 1}", text)
    return int(text)


def _class_ids(collector: Collector, column: str, ids: list[int]) -> tuple[np.ndarray, list[str], str]:
    for index, value in enumerate(ids):
        if not 0 <= value < MAX_LABELS:
            raise collector.refuse(index, column, f"a class id from 0 to {MAX_LABELS - 1}", value)
    return np.asarray(ids, dtype=np.int64), [], "ids"


def _values(collector: Collector, column: str, cells: list) -> tuple[np.ndarray, list[str], str]:
    values = [_number(collector, column, index, cell) for index, cell in enumerate(cells)]
    return np.asarray(values, dtype=np.float32), [], "values"


# --- Validation rows and the mapping --------------------------------------------------------


def _validation_mask(collector: Collector, validation, num_rows: int) -> np.ndarray | None:
    if validation is None:
        return None
    mask = np.zeros(num_rows, dtype=bool)
    if validation.fraction is not None:
        count = max(1, round(num_rows * validation.fraction))
        if count >= num_rows:
            raise DatasetError(
                f"'{collector.table.filename}' has {num_rows} rows; holding out a fraction of "
                f"{validation.fraction} leaves none for training. Lower the fraction or add rows."
            )
        mask[np.random.default_rng(validation.seed).permutation(num_rows)[:count]] = True
        return mask
    wanted = str(validation.value).lower() if isinstance(validation.value, bool) else str(validation.value)
    for index, cell in enumerate(collector.cells[validation.column]):
        text = str(cell).lower() if isinstance(cell, bool) else str(cell)
        mask[index] = cell == validation.value or text.strip() == wanted
    seen = sorted({str(cell) for cell in collector.cells[validation.column][:1000]})[:10]
    if not mask.any() or mask.all():
        which = "no" if not mask.any() else "every"
        raise DatasetError(
            f"'{collector.table.filename}' column '{validation.column}': expected some rows (not all) equal to "
            f"{validation.value!r} to hold out for validation, found {which} row; values seen: {', '.join(seen)}."
        )
    return mask


def _resolve(table: Table, spec) -> tuple[dict, str | list[str] | dict]:
    """Return the normalized mapping used and its inputs, checked against the file's columns."""
    validation_column = spec.validation.column if spec.validation else None
    if spec.label not in table.header:
        raise DatasetError(
            f"'{table.filename}' has no label column '{spec.label}'; expected it (or name the label column with "
            f'columns={{"label": "..."}}); {table.columns_text()}.'
        )
    inputs = spec.inputs
    if inputs is None:
        others = [name for name in table.header if name not in (spec.label, validation_column)]
        if len(others) != 1:
            raise DatasetError(
                f"'{table.filename}' has {len(others)} columns besides the label '{spec.label}', so which one is "
                f"the input is not clear; {table.columns_text()}. Say it with the form field columns, e.g. "
                f'{{"inputs": {{"text": "{others[0] if others else "review"}"}}, "label": "{spec.label}"}}.'
            )
        inputs = others[0]
    entries = inputs.items() if isinstance(inputs, dict) else [("", inputs)]
    for name, columns in entries:
        for column in columns if isinstance(columns, list) else [columns]:
            if column not in table.header:
                where = f"columns.inputs.{name}" if name else "columns.inputs"
                raise DatasetError(
                    f"{where} names column '{column}', which '{table.filename}' does not have; {table.columns_text()}."
                )
    if validation_column is not None and validation_column not in table.header:
        raise DatasetError(
            f"columns.validation.column names column '{validation_column}', which '{table.filename}' does not "
            f"have; {table.columns_text()}."
        )
    used = spec.to_params() | {"inputs": inputs}
    return used, inputs


def load_table(path: Path, *, fmt: str, columns: dict, filename: str) -> dict:
    """Return the data contract's arrays of a table, and what its preview needs.

    Returns:
        {"x": array | {input name: array}, "y", "labels", "x_val"?, "y_val"?, "columns_used",
        "all_columns", "label_column", "label_order", "preview_rows", "preview_names"}.
    """
    spec = columns_read(columns)
    table = open_table(path, fmt=fmt, filename=filename)
    used, inputs = _resolve(table, spec)
    entries = dict(inputs) if isinstance(inputs, dict) else {"": inputs}
    needed = [c for value in entries.values() for c in (value if isinstance(value, list) else [value])]
    needed += [spec.label] + ([spec.validation.column] if spec.validation and spec.validation.column else [])
    collector = Collector(table, list(dict.fromkeys(needed)))
    collector.read()
    arrays, kinds = {}, {}
    for name, column in entries.items():
        arrays[name], kind = _input_array(collector, column)
        for each in column if isinstance(column, list) else [column]:
            kinds[each] = kind
    y, labels, label_order = _labels(collector, spec.label, spec.label_order)
    mask = _validation_mask(collector, spec.validation, len(y))
    del collector
    data = {"y": y, "labels": labels}
    x = arrays if isinstance(inputs, dict) else arrays[""]
    if mask is not None:
        pick = (lambda array, rows: {k: v[rows] for k, v in array.items()}) if isinstance(x, dict) else None
        data["x"] = pick(x, ~mask) if pick else x[~mask]
        data["x_val"] = pick(x, mask) if pick else x[mask]
        data["y"], data["y_val"] = y[~mask], y[mask]
    else:
        data["x"] = x
    roles = {spec.label: "label"}
    if spec.validation and spec.validation.column:
        roles[spec.validation.column] = "validation"
    all_columns = []
    for column in table.header:
        kind = kinds.get(column) or ("label" if column == spec.label else table.schema_kinds.get(column, "unused"))
        role = roles.get(column) or ("input" if column in kinds else "unused")
        all_columns.append({"name": column, "kind": kind, "role": role})
    preview_names = {name: (column if isinstance(column, str) else name or "x") for name, column in entries.items()}
    preview_names = {("x" if name == "" else name): value for name, value in preview_names.items()}
    return data | {
        "columns_used": used,
        "all_columns": all_columns,
        "label_column": spec.label,
        "label_order": label_order,
        "preview_rows": table.first_rows,
        "preview_names": preview_names,
    }
