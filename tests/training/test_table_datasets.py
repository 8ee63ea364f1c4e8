"""Datasets as teams keep them (issue 22): CSV, JSON Lines, Parquet and named/string .npz arrays.

The reader tests call training.work.table_columns.load_table on files written here and check
every array against values computed independently (numpy's own permutation for the seeded
validation fraction, sorted/first-seen orders by hand). The API tests go through
POST /api/datasets/ and a real worker: the stored `inputs`, `preview` and the contract arrays
(training.work.datasets.dataset_arrays). The hostile corpus (a 50 MB cell, a 10^6-column
header, a line nested 100,000 deep, invalid UTF-8, a Parquet declaring more rows than the
limit, a .parquet that is not Parquet, a JSON Lines line and a CSV token cell of escaped quotes)
is each refused by the worker with its message (the quotes fast), and the worker stays alive
with what was stored before intact.
"""

import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from artifacts.models import Blob
from tests.registry_helpers import upload, wait_status
from training.models import Dataset
from training.specs.columns import columns_parse
from training.work.dataset_zips import DatasetError
from training.work.table_columns import load_table

REVIEWS = [("Great film", "pos", "train"), ("Dull, slow", "neg", "train"), ("Loved it", "pos", "val"),
           ("Meh", "neg", "train"), ("Superb", "pos", "train"), ("Awful", "neg", "val")]  # fmt: skip


def write_reviews_csv(path, rows=REVIEWS):
    lines = ["review,sentiment,split"] + [f'"{text}",{label},{split}' for text, label, split in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def load(path, fmt, columns=None):
    return load_table(
        path, fmt=fmt, columns=columns_parse(json.dumps(columns) if columns else None), filename=path.name
    )


# --- The reader, in-process -----------------------------------------------------------------


def test_csv_with_mapping_splits_on_a_column_and_sorts_class_names(tmp_path):
    mapping = {"inputs": {"text": "review"}, "label": "sentiment", "validation": {"column": "split", "value": "val"}}
    data = load(write_reviews_csv(tmp_path / "reviews.csv"), "csv", mapping)
    assert data["labels"] == ["neg", "pos"] and data["label_order"] == "sorted"
    assert data["x"]["text"].dtype == object and data["x"]["text"].tolist() == [
        "Great film",
        "Dull, slow",
        "Meh",
        "Superb",
    ]
    assert data["y"].tolist() == [1, 0, 0, 1]
    assert data["x_val"]["text"].tolist() == ["Loved it", "Awful"] and data["y_val"].tolist() == [1, 0]
    assert data["columns_used"]["inputs"] == {"text": "review"}


def test_first_seen_order_and_the_default_mapping(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,label\nb,zebra\na,ant\nc,zebra\n")
    data = load(path, "csv", {"label_order": "first_seen"})
    assert data["labels"] == ["zebra", "ant"] and data["y"].tolist() == [0, 1, 0]
    assert isinstance(data["x"], np.ndarray) and data["x"].tolist() == ["b", "a", "c"]
    assert data["columns_used"]["inputs"] == "text"


def test_seeded_fraction_is_numpys_permutation(tmp_path):
    path = tmp_path / "n.csv"
    path.write_text("v,label\n" + "".join(f"{i},{i % 3}\n" for i in range(20)))
    data = load(path, "csv", {"inputs": "v", "validation": {"fraction": 0.25, "seed": 7}})
    held = np.zeros(20, bool)
    held[np.random.default_rng(7).permutation(20)[:5]] = True
    assert data["x_val"].tolist() == np.arange(20)[held].astype("float32").tolist()
    assert data["x"].dtype == np.float32 and data["x"].tolist() == np.arange(20)[~held].tolist()
    assert data["y"].dtype.kind == "i" and data["labels"] == []  # integer labels are class ids


def test_list_of_numeric_columns_is_one_vector_input_and_float_labels_are_values(tmp_path):
    path = tmp_path / "v.csv"
    path.write_text("a,b,label\n1,2,0.5\n3,4.5,1.25\n")
    data = load(path, "csv", {"inputs": ["a", "b"]})
    assert data["x"].dtype == np.float32 and data["x"].tolist() == [[1, 2], [3, 4.5]]
    assert data["y"].dtype == np.float32 and data["y"].tolist() == [0.5, 1.25] and data["label_order"] == "values"


def test_jsonl_and_parquet_give_the_same_named_inputs(tmp_path):
    records = [{"text": "a b", "ids": [5, 6, 7], "label": "x"}, {"text": "c", "ids": [8], "label": "y"}]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    parquet = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(records), parquet)
    mapping = {"inputs": {"text": "text", "token_ids": "ids"}}
    for data in (load(jsonl, "jsonl", mapping), load(parquet, "parquet", mapping)):
        assert data["x"]["text"].tolist() == ["a b", "c"]
        assert data["x"]["token_ids"].dtype == np.int32 and data["x"]["token_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
        assert data["labels"] == ["x", "y"] and data["y"].tolist() == [0, 1]


@pytest.mark.parametrize(
    "name, content, columns, expected",
    [
        ("e.csv", b"", None, "'e.csv' is empty"),
        ("h.csv", b"text,label\n", None, "'h.csv' has a header but no rows"),
        ("r.csv", b"text,label\na,x\nb\n", None, "'r.csv' line 3 (row 2): expected 2 cells"),
        ("u.csv", b"text,label\na,x\n\xffb,y\n", None, "'u.csv' line 3, column 'text', byte 1: expected UTF-8"),
        ("n.csv", b"v,label\n1,x\nnan,y\n", None, "'n.csv' line 3 (row 2), column 'v': expected a finite number"),
        ("i.csv", b"v,label\n1,x\ninf,y\n", None, "found 'inf'"),
        ("l.csv", b"text,label\na,x\nb,\n", None, "line 3 (row 2), column 'label': expected a label"),
        ("m.csv", b"a,b,label\n1,2,x\n", None, "2 columns besides the label 'label'"),
        ("c.csv", b"review,label\na,x\n", {"inputs": {"text": "reviw"}}, "columns.inputs.text names column 'reviw'"),
        ("t.csv", b'ids,label\n"[1,-2]",x\n', None, "column 'ids': expected a list of token ids"),
        (
            "j.jsonl",
            b'{"t": "a", "label": 1}\n{"t": 2, "label": 0}\n',
            None,
            "line 2 (row 2), column 't': expected text",
        ),
        ("k.jsonl", b'{"t": "a", "label": 1}\n{"label": 0}\n', None, "line 2 (row 2), column 't': expected the column"),
        ("x.jsonl", b'{"t": "a", "label": 1}\n[1]\n', None, "line 2: expected a JSON object, found a list"),
        ("y.jsonl", b'{"t": "a", "label": 1}\n{"t": \n', None, "line 2: expected a JSON object, found invalid JSON"),
    ],
)
def test_refusals_name_the_file_row_column_and_what_was_expected(tmp_path, name, content, columns, expected):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DatasetError) as error:
        load(path, name.rsplit(".", 1)[1], columns)
    assert expected in str(error.value)
    if "row" in expected:
        assert "its columns are" in str(error.value)


def test_rows_and_memory_are_bounded(tmp_path, settings):
    settings.MODELHUB_DATASET_MAX_ROWS = 3
    path = tmp_path / "r.csv"
    path.write_text("text,label\n" + "a,x\n" * 4)
    with pytest.raises(DatasetError, match=r"more than 3 rows .*line 5 \(row 4\).*MODELHUB_DATASET_MAX_ROWS"):
        load(path, "csv")
    settings.MODELHUB_DATASET_MAX_ROWS = 10_000
    settings.MODELHUB_DATASET_MAX_BYTES_IN_MEMORY = 10_000
    path.write_text("text,label\n" + "a long review,x\n" * 500)
    with pytest.raises(DatasetError, match=r"the columns in use take more than .*MODELHUB_DATASET_MAX_BYTES_IN_MEMORY"):
        load(path, "csv")


def test_parquet_metadata_is_checked_before_rows_are_read(tmp_path, settings, monkeypatch):
    settings.MODELHUB_DATASET_MAX_ROWS = 100
    path = tmp_path / "big.parquet"
    pq.write_table(pa.table({"text": ["a"] * 101, "label": [0] * 101}), path)
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", lambda *a, **k: pytest.fail("rows were read"))
    with pytest.raises(DatasetError, match=r"'big.parquet' declares 101 rows in its metadata.*MAX_ROWS"):
        load(path, "parquet")


def test_columns_mapping_errors_name_the_field():
    with pytest.raises(Exception) as error:
        columns_parse('{"inputs": {"text": 5}, "validation": {"fraction": 2}}')
    assert "columns.inputs: input 'text' must be a column name" in error.value.message
    assert "columns.validation.fraction: must be a number in (0, 1); got 2" in error.value.message


# --- Through the API and a real worker --------------------------------------------------------


def post(client, path, name="reviews", **fields):
    return upload(client, "/api/datasets/", path, team="vision", name=name, **fields)


@pytest.mark.django_db(transaction=True)
def test_csv_dataset_through_the_api_has_inputs_preview_and_arrays(api_client_for, celery_worker, tmp_path):
    from training.work.datasets import dataset_arrays

    client = api_client_for("ana")
    mapping = {"inputs": {"text": "review"}, "label": "sentiment", "validation": {"column": "split", "value": "val"}}
    response = post(client, write_reviews_csv(tmp_path / "reviews.csv"), columns=json.dumps(mapping))
    assert response.status_code == 202, response.json()
    body = wait_status(client, f"/api/datasets/{response.json()['id']}/")
    assert body["status"] == "ready", body
    assert (body["format"], body["num_examples"], body["num_validation"]) == ("csv", 4, 2)
    assert body["inputs"] == [{"name": "text", "kind": "string", "shape": [], "dtype": "string"}]
    assert (
        body["input_shape"] == [] and body["labels"] == ["neg", "pos"] and body["class_histogram"] == {"0": 2, "1": 2}
    )
    preview = body["preview"]
    assert preview["num_rows"] == 6 and preview["label_distribution"] == {"neg": 2, "pos": 2}
    assert preview["rows"][1] == {"review": "Dull, slow", "sentiment": "neg", "split": "train"}
    assert {c["name"]: (c["kind"], c["role"]) for c in preview["columns"]} == {
        "review": ("string", "input"), "sentiment": ("label", "label"), "split": ("unused", "validation")}  # fmt: skip
    assert body["columns"]["label"] == "sentiment" and body["fits"] == []
    arrays = dataset_arrays(Dataset.objects.get(pk=body["id"]), input_shape=[])
    assert arrays["x"]["text"].tolist() == ["Great film", "Dull, slow", "Meh", "Superb"]
    assert arrays["x_val"]["text"].tolist() == ["Loved it", "Awful"] and arrays["labels"] == ["neg", "pos"]


@pytest.mark.django_db(transaction=True)
def test_npz_named_and_string_arrays_are_inputs(api_client_for, celery_worker, tmp_path):
    client = api_client_for("ana")
    path = tmp_path / "named.npz"
    tokens = np.array([[1, 2, 3], [4, 5, 0], [6, 0, 0]], dtype="int32")
    np.savez(path, x_text=np.array(["a", "bb", "ccc"]), x_token_ids=tokens, y=np.array([0, 1, 0]))
    body = wait_status(client, f"/api/datasets/{post(client, path).json()['id']}/")
    assert body["status"] == "ready", body
    assert body["inputs"] == [
        {"name": "text", "kind": "string", "shape": [], "dtype": "string"},
        {"name": "token_ids", "kind": "token_ids", "shape": [3], "dtype": "int32"},
    ]
    assert body["input_shape"] is None and body["preview"]["rows"][1]["x_text"] == "bb"
    assert body["preview"]["rows"][1]["x_token_ids"] == [4, 5, 0]


@pytest.mark.django_db(transaction=True)
def test_a_bad_mapping_is_400_and_stores_nothing(api_client_for, tmp_path):
    client = api_client_for("ana")
    path = write_reviews_csv(tmp_path / "reviews.csv")
    response = post(client, path, columns='{"inputs": ["review", 3]}')
    assert response.status_code == 400
    assert "columns.inputs: the single input[1] must be a column name" in response.json()["error"]["message"]
    npz = tmp_path / "a.npz"
    np.savez(npz, x=np.zeros((2, 2)), y=np.zeros(2))
    assert post(client, npz, columns='{"label": "y"}').status_code == 400
    assert Dataset.objects.count() == 0 and Blob.objects.count() == 0


def hostile_corpus(tmp_path) -> dict:
    """Return {file: the message its refusal must hold}, each file built here."""
    files = {}
    cell = tmp_path / "cell.csv"
    with open(cell, "w") as handle:
        handle.write("text,label\n")
        handle.write("a" * (50 * 1024**2) + ",x\n")
    files[cell] = "'cell.csv' line 2, column 'text' is longer than 16.0 MiB"
    wide = tmp_path / "wide.csv"
    wide.write_text(",".join(f"c{i}" for i in range(10**6)) + "\n")
    files[wide] = "'wide.csv' has 1,000,000 columns; tables are limited to 10,000 columns"
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"t": ' + "[" * 100_000 + "]" * 100_000 + ', "label": 1}\n')
    files[deep] = "'deep.jsonl' line 1: expected a JSON object nested at most 8 levels deep, found 100001 levels"
    utf = tmp_path / "latin1.csv"
    utf.write_bytes("text,label\ncafé,x\n".encode("latin-1"))
    files[utf] = "'latin1.csv' line 2, column 'text', byte 4: expected UTF-8 text, found the byte 0xe9"
    rows = tmp_path / "rows.parquet"
    pq.write_table(
        pa.table({"text": pa.array(np.zeros(10_000_001, "int8")), "label": pa.array(np.zeros(10_000_001, "int8"))}),
        rows,
    )
    files[rows] = "'rows.parquet' declares 10,000,001 rows in its metadata; tables are limited to 10,000,000 rows"
    quotes = '["' + '\\"' * ((16 * 1024**2 - 64) // 3)  # a string that never ends: the depth scan was quadratic
    line = tmp_path / "quotes.jsonl"
    line.write_text('{"t": [1], "label": 0}\n' + quotes + "\n")
    files[line] = "'quotes.jsonl' line 2: expected a JSON object, found invalid JSON"
    cell = tmp_path / "quotes.csv"
    cell.write_text('ids,label\n"[1]",0\n"' + quotes.replace('"', '""') + '",1\n')
    files[cell] = "'quotes.csv' line 3 (row 2), column 'ids': expected a list of token ids"
    fake = tmp_path / "fake.parquet"
    fake.write_text("text,label\na,x\n")
    files[fake] = "'fake.parquet' is not a readable Parquet file"
    return files


@pytest.mark.django_db(transaction=True)
def test_hostile_tables_are_refused_by_the_worker_which_stays_alive(api_client_for, celery_worker, tmp_path):
    client = api_client_for("ana")
    good = write_reviews_csv(tmp_path / "good.csv")
    mapping = json.dumps({"inputs": "review", "label": "sentiment", "validation": {"column": "split", "value": "val"}})
    before = wait_status(client, f"/api/datasets/{post(client, good, columns=mapping).json()['id']}/")
    assert before["status"] == "ready", before
    for path, expected in hostile_corpus(tmp_path).items():
        response = post(client, path, name=path.stem)
        assert response.status_code == 202, response.json()
        started = time.monotonic()
        body = wait_status(client, f"/api/datasets/{response.json()['id']}/", timeout=120)
        assert body["status"] == "rejected" and expected in body["error"], (path.name, body["error"])
        if path.name.startswith("quotes"):  # refused fast: the depth scan is linear
            assert time.monotonic() - started < 20, path.name
    after = wait_status(client, f"/api/datasets/{post(client, good, name='again', columns=mapping).json()['id']}/")
    assert after["status"] == "ready" and after["inputs"] == before["inputs"]
    stored = Dataset.objects.get(pk=before["id"])
    assert stored.status == "ready" and Blob.objects.filter(pk=stored.blob_id).exists()
    assert client.get(f"/api/datasets/{before['id']}/").json()["preview"] == before["preview"]


# --- Preview on the dashboard and the backbones a dataset fits --------------------------------


def table_row(user, path, *, columns=None):
    """A table dataset stored from `path` and validated in-process by the real validator."""
    from artifacts.services import blob_store_path
    from teams.models import Team
    from training.work.datasets import dataset_validate

    dataset = Dataset.objects.create(
        team=Team.objects.get(slug="vision"), name=path.stem, format=path.suffix.lstrip("."),
        blob=blob_store_path(path=path).blob, filename=path.name, created_by=user, columns=columns_parse(columns),
    )  # fmt: skip
    dataset_validate(dataset_id=dataset.pk)
    dataset.refresh_from_db()
    return dataset


@pytest.mark.django_db
def test_preview_and_fitting_backbones_on_the_api_and_the_dashboard(client, make_member, tmp_path):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse
    from rest_framework.test import APIClient

    from tests.view_helpers import SPEC, backbone_row

    alice, token = make_member("alice", team="vision")
    fitting = backbone_row(alice)
    path = tmp_path / "features.csv"
    names = [f"f{i}" for i in range(8)]
    path.write_text(
        ",".join([*names, "label"]) + "\n" + "".join(f"{','.join(['0.5'] * 8)},c{i % 2}\n" for i in range(6))
    )
    dataset = table_row(alice, path, columns=json.dumps({"inputs": names}))
    assert dataset.status == "ready", dataset.error
    assert dataset.inputs == [{"name": "x", "kind": "number", "shape": [8], "dtype": "float32"}]
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    api.get(f"/api/datasets/{dataset.pk}/")  # the token's first use is recorded once
    with CaptureQueriesContext(connection) as one:
        body = api.get(f"/api/datasets/{dataset.pk}/").json()
    assert [fit["id"] for fit in body["fits"]] == [fitting.pk]
    for index in range(3):  # backbones that do not fit: other input shapes
        other = backbone_row(alice, name=f"other{index}")
        other.spec = {**SPEC, "inputs": [{"name": "inputs", "shape": [4 + index], "dtype": "float32"}]}
        other.save(update_fields=["spec"])
    with CaptureQueriesContext(connection) as four:
        body = api.get(f"/api/datasets/{dataset.pk}/").json()
    assert [fit["id"] for fit in body["fits"]] == [fitting.pk]
    assert len(four) == len(one) == 3  # token, dataset, backbones: whatever the number of backbones
    client.force_login(alice)
    page = client.get(reverse("training:dataset_detail", args=[dataset.pk])).content.decode()
    assert 'id="dataset-preview"' in page and "<code>f7</code>" in page and "c0: 3" in page
    assert f"/backbones/{fitting.pk}/" in page and fitting.label in page.replace("&#x27;", "'")
