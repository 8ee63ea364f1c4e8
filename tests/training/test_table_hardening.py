"""Table datasets against hostile files (review of issue 22): each is refused fast, with its reason.

Why: a table is read by a worker, a row at a time, within MODELHUB_DATASET_MAX_BYTES_IN_MEMORY.
These files were built to get past that: a JSON string of escaped quotes that made the depth scan
quadratic, Parquet files whose few bytes decode to hundreds of MB (run-length and dictionary
encoding), a struct column that shifted which leaf the size check read, JSON Lines lists that
cost 9x what was counted, a CSV record made of many long quoted lines, malformed CSV that
crashed the reader, and form fields nested 5,000 deep that raised RecursionError (a 500). The
reader tests call training.work.table_columns.load_table in-process; the last ones go through
the API.
"""

import json
import re
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.errors import ValidationError
from core.json_bounded import json_loads_bounded, json_nesting_depth
from tests.training.test_table_datasets import load, post, write_reviews_csv
from training.work import tables
from training.work.dataset_zips import DatasetError

QUOTES = '["' + '\\"' * (8 * 1024**2 - 8)  # 16 MiB of a string that never ends


@pytest.mark.parametrize(
    "text", ["{}", '{"a": [1, {"b": "[[[["}]}', '["\\"[", [[]]]', "[" * 50 + "]" * 50, '"x"', '{"k\\\\": "[{"}']
)
def test_the_core_depth_scan_agrees_with_the_parsed_depth_and_the_ml_library(text):
    from modelhub.ml.untrusted.config import json_nesting_depth as ml_depth

    def depth(value) -> int:
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        return 0 if children is None else 1 + max((depth(item) for item in children), default=0)

    assert json_nesting_depth(text) == ml_depth(text.encode()) == depth(json.loads(text))


def test_json_loads_bounded_refuses_depth_and_never_raises_recursion_error():
    assert json_loads_bounded('{"a": [1]}', max_depth=2, what="x") == {"a": [1]}
    with pytest.raises(ValidationError, match="Expected x nested at most 2 levels deep, found 3 levels"):
        json_loads_bounded("[[[]]]", max_depth=2, what="x")
    with pytest.raises(ValidationError, match="Expected x, found invalid JSON"):
        json_loads_bounded("[" * 200_000, max_depth=10**6, what="x")  # json.loads would recurse
    started = time.monotonic()
    with pytest.raises(ValidationError, match="found invalid JSON"):
        json_loads_bounded(QUOTES, max_depth=8, what="x")
    assert time.monotonic() - started < 5


def test_escaped_quote_runs_in_a_jsonl_line_and_a_csv_token_cell_are_refused_fast(tmp_path):
    jsonl = tmp_path / "quotes.jsonl"
    jsonl.write_text('{"t": [1], "label": 0}\n' + QUOTES + "\n")
    cell = tmp_path / "quotes.csv"
    csv_cell = '["' + '\\"' * ((16 * 1024**2 - 64) // 3)  # the longest that fits a line once quoted
    cell.write_text('ids,label\n"[1]",0\n"' + csv_cell.replace('"', '""') + '",1\n')
    for path, expected in (
        (jsonl, "'quotes.jsonl' line 2: expected a JSON object, found invalid JSON"),
        (cell, "'quotes.csv' line 3 (row 2), column 'ids': expected a list of token ids"),
    ):
        started = time.monotonic()
        with pytest.raises(DatasetError, match=re.escape(expected)):
            load(path, path.suffix[1:])
        assert time.monotonic() - started < 5, path.name


# --- Parquet ------------------------------------------------------------------------------------


def test_a_run_length_bomb_is_refused_from_its_value_count_before_reading(tmp_path, settings, monkeypatch):
    settings.MODELHUB_DATASET_MAX_BYTES_IN_MEMORY = 64 * 1024**2
    path = tmp_path / "rle.parquet"  # one row of 4M zeros: 922 bytes, 114 declared, 32 MB decoded
    pq.write_table(pa.table({"tokens": [[0] * 4_000_000], "label": [0]}), path, compression="none")
    assert path.stat().st_size < 2000
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", lambda *a, **k: pytest.fail("rows were read"))
    with pytest.raises(DatasetError, match=r"'rle.parquet' declares 4,000,001 values, .* in the columns in use"):
        load(path, "parquet")


def test_a_dictionary_bomb_is_refused_before_its_strings_become_python(tmp_path, settings):
    settings.MODELHUB_DATASET_MAX_BYTES_IN_MEMORY = 16 * 1024**2
    path = tmp_path / "dict.parquet"  # one 512 KiB string stored once, used by 1000 rows: 500 MB decoded
    table = pa.table({"text": ["x" * 512 * 1024] * 1000, "label": [0] * 1000})
    pq.write_table(table, path, compression="none", dictionary_pagesize_limit=2 * 1024**2)
    assert path.stat().st_size < 600 * 1024
    with pytest.raises(DatasetError, match=r"'dict.parquet' rows 1 to 64: the columns in use \(text, label\) decode"):
        load(path, "parquet")


def test_a_struct_column_first_does_not_shift_the_size_check(tmp_path, settings):
    rows = {"pad": [{"a": 1, "b": 2}] * 3, "text": ["a" * 100_000, "b", "c"], "label": [0, 1, 0]}
    path = tmp_path / "struct.parquet"
    pq.write_table(pa.table(rows), path, compression="none")
    data = load(path, "parquet", {"inputs": "text"})
    assert [text[:1] for text in data["x"].tolist()] == ["a", "b", "c"] and data["y"].tolist() == [0, 1, 0]
    with pytest.raises(DatasetError, match=r"column 'pad' holds struct<a: int64, b: int64>; expected text"):
        load(path, "parquet", {"inputs": "pad"})
    settings.MODELHUB_DATASET_MAX_BYTES_IN_MEMORY = 50_000  # text declares 100 KB; pad.b (leaf 1) a few bytes
    with pytest.raises(DatasetError, match=r"'struct.parquet' declares 6 values, .* \(text, label\)"):
        load(path, "parquet", {"inputs": "text"})


# --- JSON Lines memory and nesting --------------------------------------------------------------


def test_jsonl_list_values_are_counted_as_python_objects(tmp_path, settings):
    settings.MODELHUB_DATASET_MAX_BYTES_IN_MEMORY = 2_000_000
    path = tmp_path / "floats.jsonl"  # 100,000 floats: 3.6 MB as Python objects (counted 400 KB before)
    path.write_text(json.dumps({"t": [7] * 10, "label": 0}) + "\n" + json.dumps({"t": [0.5] * 100_000, "label": 1}))
    with pytest.raises(DatasetError, match=r"line 2 \(row 2\): the columns in use take more than"):
        load(path, "jsonl")


@pytest.mark.parametrize(
    "cell, expected",
    [
        ([[0.5, 0.5]], "column 't': expected a flat list of token ids"),
        ({"a": 1}, "column 't': expected text, a number, a list of token ids or a label"),
    ],
)
def test_nested_lists_and_objects_are_refused_as_they_are_read(tmp_path, cell, expected):
    path = tmp_path / "nested.jsonl"  # line 3 is broken: the reader must stop at line 2
    path.write_text('{"t": [1], "label": 0}\n' + json.dumps({"t": cell, "label": 1}) + '\n{"t": \n')
    with pytest.raises(DatasetError, match=r"line 2 \(row 2\), " + expected):
        load(path, "jsonl")


def test_preview_rows_keep_only_cut_cells(tmp_path):
    from training.work.dataset_preview import PREVIEW_VALUES, build_preview

    record = {"t": list(range(1000)), "other": {"deep": [[1] * 1000] * 3}, "long": "w" * 10_000, "label": 1}
    path = tmp_path / "wide.jsonl"
    path.write_text(json.dumps(record) + "\n")
    data = load(path, "jsonl", {"inputs": "t"})
    [row] = data["preview_rows"]
    assert row["t"] == [*range(PREVIEW_VALUES), "…"] and row["long"] == "w" * 80 + "…"
    assert isinstance(row["other"], str) and len(row["other"]) <= 81
    preview = build_preview(
        inputs={"t": data["x"]}, y=data["y"], labels=[], target="classes", num_validation=0,
        columns=data["all_columns"], label_column="label", label_order="ids", rows=data["preview_rows"],
    )  # fmt: skip
    assert preview["rows"] == [row] and len(json.dumps(preview)) < 2000


# --- CSV ----------------------------------------------------------------------------------------


def test_a_csv_record_of_many_long_quoted_lines_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "MAX_LINE_BYTES", 1024**2)
    path = tmp_path / "record.csv"  # 30 cells of 100 KB, each line short: one 3 MB record
    cells = ",".join('"' + "a" * 100_000 + '\nb"' for _ in range(30))
    path.write_text("text,label\na,x\n" + cells + "\n")
    with pytest.raises(DatasetError, match=r"'record.csv' lines 3 to \d+ \(row 2\) are one record longer than 1.0 MiB"):
        load(path, "csv")


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("cr.csv", b"a\rb,label\n", "'cr.csv' line 1 (the header): expected a CSV header row, found a malformed one"),
        ("crbad.csv", b"text,label\na\rb\xff,x\n", "'crbad.csv' line 2, byte 4: expected UTF-8"),
        ("big.csv", b"text,label\na," + b"7" * 5000 + b"\n", "line 2 (row 1), column 'label': expected a class id"),
    ],
)
def test_malformed_csv_is_a_dataset_error_naming_the_line(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DatasetError) as error:
        load(path, "csv")
    assert expected in str(error.value)


# --- Form fields parsed as JSON -------------------------------------------------------------------


def test_deep_json_in_form_fields_is_a_validation_error():
    from heads.imports import _import_tasks
    from heads.probe_shapes import probe_shape_parse
    from training.specs.columns import columns_parse

    deep = "[" * 5000
    for parse, expected in (
        (columns_parse, "'columns' as a JSON object nested at most 4 levels deep, found 5000"),
        (probe_shape_parse, "expected a JSON object nested at most 2 levels deep, found 5000 levels, received '[[["),
        (_import_tasks, "Expected tasks as"),
    ):
        with pytest.raises(ValidationError) as error:
            parse(deep)
        assert expected in error.value.message
        assert len(error.value.message) < 1000


@pytest.mark.django_db(transaction=True)
def test_deep_columns_are_400_and_the_list_leaves_the_preview_out(api_client_for, tmp_path):
    client = api_client_for("ana")
    path = write_reviews_csv(tmp_path / "reviews.csv")
    response = post(client, path, columns="[" * 5000)
    assert response.status_code == 400 and "found 5000 levels" in response.json()["error"]["message"]
    created = post(client, path, columns='{"inputs": "review", "label": "sentiment"}')
    assert created.status_code == 202, created.json()
    [listed] = client.get("/api/datasets/").json()["results"]
    assert listed["id"] == created.json()["id"] and "preview" not in listed and "columns" in listed
    assert "preview" in client.get(f"/api/datasets/{listed['id']}/").json()
