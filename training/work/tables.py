"""Worker side: read a table dataset (CSV, JSON Lines, Parquet) a row at a time, within the limits.

Teams keep data as tables; this module streams one without ever holding the file: CSV through
the csv module over lines read (and UTF-8-decoded) one at a time, each line bounded; JSON Lines
a line at a time, each line's nesting depth checked before json.loads (as the untrusted-file
reader does for model configs); Parquet through pyarrow.parquet.ParquetFile, whose metadata
(row count, columns, declared sizes) is checked before any data page is read, then a batch of
rows at a time. Only the columns in use are kept. What the cells become (the data contract of
training.work.datasets) is training.work.table_columns; `load_table` joins both.

Every refusal names the file, the line or row, the column, what was expected and what was
found, and the columns the file has.
"""

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from core.errors import ValidationError
from core.json_bounded import json_loads_bounded
from training.work.dataset_preview import preview_cell
from training.work.dataset_zips import DatasetError, format_bytes, over_limit

MAX_TABLE_COLUMNS = 10_000
MAX_LINE_BYTES = 16 * 1024**2  # one CSV line or record (its lines together), one JSON Lines record
MAX_JSON_DEPTH = 8  # a record {"tokens": [1, 2]} is 2 deep
PARQUET_BATCH_ROWS = 64  # rows decoded at a time: one row may hold a 16 MiB list or string
PY_VALUE_BYTES = 36  # what one value costs once a Python object in a list (a float or int, and its slot)
# Bytes per value of the Parquet physical types, once decoded (BYTE_ARRAY: its offset; the bytes
# themselves count in the declared size, or in the batch check when a dictionary repeats them).
PHYSICAL_WIDTHS = {"BOOLEAN": 1, "INT32": 4, "INT64": 8, "INT96": 12, "FLOAT": 4, "DOUBLE": 8, "BYTE_ARRAY": 4}
FIRST_ROWS = 5
CSV_FIX = "Save the table as UTF-8 CSV with a header row, one row per example."
JSONL_FIX = 'Write one JSON object per line, e.g. {"review": "Great film", "sentiment": "pos"}.'
PARQUET_FIX = "Write it with pyarrow.parquet.write_table or pandas.DataFrame.to_parquet."


@dataclass
class Table:
    """An opened table: its file name, its columns, and its rows read on demand."""

    filename: str
    header: list[str]
    rows_of: object  # (columns) -> Iterator[(location, {column: cell})]
    typed: bool  # cells are JSON/Arrow values (True) or CSV text (False)
    first_rows: list[dict] = field(default_factory=list)
    schema_kinds: dict[str, str] = field(default_factory=dict)

    def columns_text(self) -> str:
        shown = ", ".join(f"'{name}'" for name in self.header[:50])
        more = f" and {len(self.header) - 50:,} more" if len(self.header) > 50 else ""
        return f"its columns are {shown}{more}"

    def where(self, location: str, column: str | None = None) -> str:
        return f"'{self.filename}' {location}" + (f", column '{column}'" if column is not None else "")

    def rows(self, columns: list[str]) -> Iterator[tuple[str, dict]]:
        """Yield (location such as "line 8 (row 7)", {column: cell}) for the given columns only."""
        return self.rows_of(columns)


def _check_header(header: list[str], filename: str, fix: str) -> list[str]:
    if len(header) > MAX_TABLE_COLUMNS:
        raise DatasetError(
            f"'{filename}' has {len(header):,} columns; tables are limited to {MAX_TABLE_COLUMNS:,} columns. {fix}"
        )
    seen = set()
    for index, name in enumerate(header):
        if not isinstance(name, str) or not name.strip():
            raise DatasetError(f"'{filename}' column {index + 1} has no name; expected a header name. {fix}")
        if name in seen:
            raise DatasetError(f"'{filename}' names column '{name}' twice; expected unique column names. {fix}")
        seen.add(name)
    return header


def _check_rows(table_or_name: str, count: int, location: str) -> None:
    max_rows = settings.MODELHUB_DATASET_MAX_ROWS
    if count > max_rows:
        raise over_limit(
            f"'{table_or_name}' has more than {max_rows:,} rows (at {location})",
            f"tables are limited to {max_rows:,} rows",
            "MODELHUB_DATASET_MAX_ROWS",
        )


def _lines(path: Path, filename: str, fix: str, header: list[str] | None = None) -> Iterator[tuple[int, str]]:
    """Yield (line number, text) of a UTF-8 file, each line at most MAX_LINE_BYTES."""
    with open(path, "rb") as handle:
        number = 0
        while raw := handle.readline(MAX_LINE_BYTES + 1):
            number += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                column = _csv_column_at(raw[: 1024**2], header) if header is not None else ""
                raise DatasetError(
                    f"'{filename}' line {number}{column} is longer than {format_bytes(MAX_LINE_BYTES)}; expected "
                    f"a row (or record) of at most that size. Shorten the cell or split the row. {fix}"
                )
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                column = _csv_column_at(raw[: exc.start], header) if header is not None else ""
                raise DatasetError(
                    f"'{filename}' line {number}{column}, byte {exc.start + 1}: expected UTF-8 text, found the byte "
                    f"0x{raw[exc.start]:02x}, which is not UTF-8. Save the file as UTF-8."
                ) from None
            yield number, text.removeprefix("\ufeff") if number == 1 else text


def _csv_column_at(prefix: bytes, header: list[str]) -> str:
    """Return ", column 'x'" for the cell a line prefix ends in (for errors inside a line)."""
    try:
        fields = next(csv.reader([prefix.decode("utf-8", "replace")]), [""])
    except csv.Error:  # e.g. a bare CR inside an unquoted cell: name no column rather than fail here
        return ""
    index = max(len(fields) - 1, 0)
    return f", column '{header[index]}'" if index < len(header) else f", cell {index + 1}"


# --- CSV ------------------------------------------------------------------------------------


def open_csv(path: Path, filename: str) -> Table:
    """Open a CSV file: read its header (the first line) and check it."""
    csv.field_size_limit(MAX_LINE_BYTES)
    try:
        number, first = next(_lines(path, filename, CSV_FIX))
    except StopIteration:
        raise DatasetError(f"'{filename}' is empty; expected a header row and data rows. {CSV_FIX}") from None
    try:
        header = _check_header(next(csv.reader([first]), []), filename, CSV_FIX)
    except csv.Error as exc:
        raise DatasetError(
            f"'{filename}' line {number} (the header): expected a CSV header row, found a malformed one ({exc}). "
            f"{CSV_FIX}"
        ) from None
    if not header:
        raise DatasetError(f"'{filename}' starts with an empty line; expected a header row. {CSV_FIX}")
    table = Table(filename=filename, header=header, rows_of=None, typed=False)

    def rows(columns: list[str]) -> Iterator[tuple[str, dict]]:
        positions = [(name, header.index(name)) for name in columns]
        lines = _lines(path, filename, CSV_FIX, header)
        next(lines)  # the header
        pending = {"chars": 0, "first": 2}  # what the reader took since the last record, from which line

        def record_lines() -> Iterator[str]:
            """Hand the reader one line at a time, refusing a record (a quoted cell spans lines) too long."""
            for number, text in lines:
                if pending["chars"] == 0:
                    pending["first"] = number
                pending["chars"] += len(text)
                if pending["chars"] > MAX_LINE_BYTES:
                    raise DatasetError(
                        f"'{filename}' lines {pending['first']} to {number} (row {count + 1}) are one record longer "
                        f"than {format_bytes(MAX_LINE_BYTES)}; expected a row of at most that size. Is a quoted "
                        f"cell never closed? Close the quote, or shorten the cell. {CSV_FIX}"
                    )
                yield text

        reader = csv.reader(record_lines())
        count = 0
        try:
            for record in reader:
                pending["chars"] = 0
                if not record:
                    continue  # a blank line
                count += 1
                location = f"line {reader.line_num + 1} (row {count})"
                if len(record) != len(header):
                    raise DatasetError(
                        f"{table.where(location)}: expected {len(header)} cells (one per column of the header), "
                        f"found {len(record)}; {table.columns_text()}. Quote cells holding commas. {CSV_FIX}"
                    )
                _check_rows(filename, count, location)
                if count <= FIRST_ROWS:
                    cut = {name: preview_cell(cell) for name, cell in zip(header, record, strict=True)}
                    table.first_rows.append(cut)
                yield location, {name: record[index] for name, index in positions}
        except csv.Error as exc:
            raise DatasetError(
                f"{table.where(f'line {reader.line_num + 1}')}: expected a CSV row, found a malformed one ({exc}). "
                f"{CSV_FIX}"
            ) from None

    table.rows_of = rows
    return table


# --- JSON Lines -----------------------------------------------------------------------------


def _parse_record(text: str, number: int, filename: str):
    try:
        record = json_loads_bounded(text, max_depth=MAX_JSON_DEPTH, what="a JSON object")
    except ValidationError as exc:  # too deep or not JSON: "Expected a JSON object ..., found ..."
        raise DatasetError(f"'{filename}' line {number}: e{exc.message[1:]} {JSONL_FIX}") from None
    if not isinstance(record, dict):
        raise DatasetError(
            f"'{filename}' line {number}: expected a JSON object, found a {type(record).__name__}. {JSONL_FIX}"
        )
    return record


def open_jsonl(path: Path, filename: str) -> Table:
    """Open a JSON Lines file: its columns are the keys of the first record."""
    first = None
    for number, text in _lines(path, filename, JSONL_FIX):
        if text.strip():
            first = _parse_record(text, number, filename)
            break
    if first is None:
        raise DatasetError(f"'{filename}' is empty; expected one JSON object per line. {JSONL_FIX}")
    header = _check_header(list(first), filename, JSONL_FIX)
    table = Table(filename=filename, header=header, rows_of=None, typed=True)

    def rows(columns: list[str]) -> Iterator[tuple[str, dict]]:
        count = 0
        for number, text in _lines(path, filename, JSONL_FIX):
            if not text.strip():
                continue
            count += 1
            location = f"line {number} (row {count})"
            _check_rows(filename, count, location)
            record = _parse_record(text, number, filename)
            missing = [name for name in columns if name not in record]
            if missing:
                raise DatasetError(
                    f"{table.where(location, missing[0])}: expected the column, found a record without it "
                    f"(it has {', '.join(repr(key) for key in list(record)[:20])}); {table.columns_text()}."
                )
            if count <= FIRST_ROWS:
                table.first_rows.append({name: preview_cell(record.get(name)) for name in header})
            yield location, {name: record[name] for name in columns}

    table.rows_of = rows
    return table


# --- Parquet --------------------------------------------------------------------------------


def _parquet_kind(arrow_type) -> str:
    import pyarrow as pa

    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type):
        return "number"
    if (pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)) and pa.types.is_integer(
        arrow_type.value_type
    ):
        return "token_ids"
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    return f"unsupported ({arrow_type})"


def open_parquet(path: Path, filename: str) -> Table:
    """Open a Parquet file and check its metadata (rows, columns) before reading any row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        metadata, schema = parquet.metadata, parquet.schema_arrow
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DatasetError(f"'{filename}' is not a readable Parquet file ({exc}). {PARQUET_FIX}") from None
    if metadata.num_columns > MAX_TABLE_COLUMNS:
        raise DatasetError(
            f"'{filename}' declares {metadata.num_columns:,} columns; tables are limited to "
            f"{MAX_TABLE_COLUMNS:,} columns. {PARQUET_FIX}"
        )
    header = _check_header(list(schema.names), filename, PARQUET_FIX)
    max_rows = settings.MODELHUB_DATASET_MAX_ROWS
    if metadata.num_rows > max_rows:
        raise over_limit(
            f"'{filename}' declares {metadata.num_rows:,} rows in its metadata",
            f"tables are limited to {max_rows:,} rows",
            "MODELHUB_DATASET_MAX_ROWS",
        )
    if metadata.num_rows == 0:
        raise DatasetError(f"'{filename}' has columns but no rows; expected one row per example. {PARQUET_FIX}")
    kinds = {name: _parquet_kind(schema.field(name).type) for name in header}
    leaves = _leaf_columns(metadata, schema, filename)
    table = Table(filename=filename, header=header, rows_of=None, typed=True, schema_kinds=kinds)

    def rows(columns: list[str]) -> Iterator[tuple[str, dict]]:
        for name in columns:
            if kinds[name].startswith("unsupported"):
                raise DatasetError(
                    f"'{filename}' column '{name}' holds {schema.field(name).type}; expected text (string), numbers, "
                    f"booleans or token ids (a list of integers); {table.columns_text()}. Use another column, or "
                    f"flatten this one into such columns. {PARQUET_FIX}"
                )
        _check_declared_bytes(metadata, leaves, columns, filename)
        strings = [name for name in columns if kinds[name] == "string"]
        max_bytes = settings.MODELHUB_DATASET_MAX_BYTES_IN_MEMORY
        count, read_bytes = 0, 0
        try:
            reader = pq.ParquetFile(path, read_dictionary=strings) if strings else parquet
            for batch in reader.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns, use_threads=False):
                read_bytes += _batch_bytes(batch)
                if read_bytes > max_bytes:  # before to_pylist builds a Python object per value
                    raise over_limit(
                        f"'{filename}' rows {count + 1} to {count + batch.num_rows}: the columns in use "
                        f"({', '.join(columns)}) decode to more than {format_bytes(max_bytes)} so far, although the "
                        "file is small (repeated values, dictionary or run-length encoded)",
                        f"datasets are limited to {format_bytes(max_bytes)} in memory",
                        "MODELHUB_DATASET_MAX_BYTES_IN_MEMORY",
                    )
                cells = {name: batch.column(name).to_pylist() for name in columns}
                for index in range(batch.num_rows):
                    count += 1
                    location = f"row {count}"
                    _check_rows(filename, count, location)
                    row = {name: cells[name][index] for name in columns}
                    if count <= FIRST_ROWS:
                        table.first_rows.append({name: preview_cell(cell) for name, cell in row.items()})
                    yield location, row
        except (pa.ArrowException, OSError, ValueError, MemoryError) as exc:
            raise DatasetError(
                f"'{filename}' row {count + 1} and after cannot be read ({exc}); {table.columns_text()}. {PARQUET_FIX}"
            ) from None
        if count != metadata.num_rows:
            raise DatasetError(
                f"'{filename}' declares {metadata.num_rows:,} rows but holds {count:,}: a damaged file. {PARQUET_FIX}"
            )

    table.rows_of = rows
    return table


def _leaf_count(arrow_type) -> int:
    """How many Parquet leaf columns store a column of this Arrow type (a struct: one per field)."""
    import pyarrow as pa

    if pa.types.is_dictionary(arrow_type):
        return _leaf_count(arrow_type.value_type)
    if pa.types.is_struct(arrow_type):
        return sum(_leaf_count(arrow_type.field(index).type) for index in range(arrow_type.num_fields))
    if pa.types.is_map(arrow_type):
        return _leaf_count(arrow_type.key_type) + _leaf_count(arrow_type.item_type)
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type):
        return _leaf_count(arrow_type.value_type)
    return 1


def _leaf_columns(metadata, schema, filename: str) -> dict[str, list[int]]:
    """Return {column: the indexes of its leaf columns} (what a row group's column(i) indexes).

    A struct column has one leaf per field, so top-level positions are not leaf positions: with
    `pad: struct<a, b>, text`, `text` is leaf 2. Leaves come in schema order; each leaf's path
    must start with its column's name, else the file is refused as damaged.
    """
    leaves, position = {}, 0
    for name in schema.names:
        count = _leaf_count(schema.field(name).type)
        leaves[name] = list(range(position, position + count))
        position += count
    paths_agree = position == metadata.num_columns and all(
        metadata.schema.column(index).path == name or metadata.schema.column(index).path.startswith(name + ".")
        for name, indexes in leaves.items()
        for index in indexes
    )
    if not paths_agree:
        raise DatasetError(
            f"'{filename}' has {metadata.num_columns:,} leaf columns that do not match its schema "
            f"({', '.join(schema.names[:20])}): a damaged file. {PARQUET_FIX}"
        )
    return leaves


def _check_declared_bytes(metadata, leaves: dict[str, list[int]], columns: list[str], filename: str) -> None:
    """Refuse the columns in use when their row groups declare more than the memory limit.

    Every leaf of each column counts, by the larger of its declared uncompressed size and its
    value count times the decoded width: run-length and dictionary encoding store a million
    equal values in a few bytes, so the declared size alone says nothing about the decoded one.
    Each value then costs PY_VALUE_BYTES as a Python object.
    """
    declared, num_values = 0, 0
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for name in columns:
            for leaf in leaves[name]:
                chunk = row_group.column(leaf)
                width = PHYSICAL_WIDTHS.get(chunk.physical_type) or metadata.schema.column(leaf).length or 1
                declared += max(chunk.total_uncompressed_size, chunk.num_values * width)
                num_values += chunk.num_values
    total = declared + num_values * PY_VALUE_BYTES
    max_bytes = settings.MODELHUB_DATASET_MAX_BYTES_IN_MEMORY
    if total > max_bytes:
        raise over_limit(
            f"'{filename}' declares {num_values:,} values, {format_bytes(total)} once read, in the columns in use "
            f"({', '.join(columns)})",
            f"datasets are limited to {format_bytes(max_bytes)} in memory",
            "MODELHUB_DATASET_MAX_BYTES_IN_MEMORY",
        )


def _batch_bytes(batch) -> int:
    """Return what a batch of Parquet rows costs once turned into Python values (before doing it).

    Strings are read as dictionary arrays (a repeated string is stored once), so their decoded
    length is summed through the dictionary, without decoding them.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    total = 0
    for array in batch.columns:
        if pa.types.is_dictionary(array.type):
            lengths = pc.binary_length(array.dictionary).take(array.indices)
            total += (pc.sum(lengths).as_py() or 0) + len(array) * PY_VALUE_BYTES
            continue
        values = array
        while pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
            values = values.flatten()
        total += array.nbytes + len(values) * PY_VALUE_BYTES
    return total


OPENERS = {"csv": open_csv, "jsonl": open_jsonl, "parquet": open_parquet}


def open_table(path: Path, *, fmt: str, filename: str) -> Table:
    """Open a table file of format "csv", "jsonl" or "parquet" once its size is within the limits."""
    size = path.stat().st_size
    max_size = settings.MODELHUB_DATASET_MAX_UNCOMPRESSED_BYTES
    if size > max_size:
        raise over_limit(
            f"'{filename}' is {format_bytes(size)}",
            f"datasets are limited to {format_bytes(max_size)} unpacked",
            "MODELHUB_DATASET_MAX_UNCOMPRESSED_BYTES",
        )
    if size == 0:
        raise DatasetError(f"'{filename}' is empty (0 bytes); expected a table with a header and rows.")
    return OPENERS[fmt](path, filename)
