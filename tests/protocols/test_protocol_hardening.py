"""The protocols' answers to hostile or unusual requests (review of issue 24's code), and their batching.

Each test here failed before its fix: MLflow LIKE filters that backtracked, version strings that
pass ``isdigit()`` but not ``int()``, deep JSON and plain-text refusals under /v1 and /v2, OIP
shapes NumPy cannot take, outputs checked after the work, a protocol batch split into one job per
task (and a SavedModel loaded per job), MLflow reads without throttle or backoff, searches that
sent id lists, bundle rewrites racing each other, and an alias moved back that kept its stale
label. In-process, with a stand-in worker (tests.assemblies.manifests) where a worker is needed.
"""

import json
import re
import threading
import time
import zipfile
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from assemblies.models import Assembly, Prediction
from heads.models import HeadVersion
from tests.assemblies.manifests import fake_worker
from tests.view_helpers import assembly_row, backbone_row, head_row

APPROVED = HeadVersion.Status.APPROVED
ROW = [0.5] * 8


@pytest.fixture
def author(api_client_for):
    return api_client_for("alice")


@pytest.fixture
def model(author):
    """Model 'vision.tiny': one ready assembly of sentiment (3 wide) + topic (5 wide)."""
    backbone = backbone_row(author.user)
    sentiment = head_row(author.user, backbone, task="sentiment", status=APPROVED)
    topic = head_row(author.user, backbone, task="topic", status=APPROVED, output_width=5)
    return {"both": assembly_row(author.user, backbone, [sentiment, topic]), "backbone": backbone, "heads": [sentiment]}


def error(response, status: int) -> str:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    assert set(response.json()) == {"error"} and isinstance(response.json()["error"], str)
    return response.json()["error"]


def infer(client, body, *, version=None):
    path = "/v2/models/vision.tiny" + (f"/versions/{version}" if version else "") + "/infer"
    return client.post(path, json.dumps(body), content_type="application/json")


def tensor(name, shape, datatype, data):
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


# --- MLflow filters (finding 2) --------------------------------------------------------------------


def test_like_matches_as_sql_does_without_backtracking():
    from mlflow_api.filters import like_match, parse_filter

    def reference(pattern, text, case):
        body = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
        return bool(re.fullmatch(body, text, re.DOTALL | (0 if case else re.IGNORECASE)))

    rng = np.random.default_rng(7)
    for _ in range(20000):
        pattern = "".join(rng.choice(list("ab%_"), size=rng.integers(0, 8)))
        text = "".join(rng.choice(list("abAB"), size=rng.integers(0, 9)))
        for case in (True, False):
            assert like_match(pattern, text, case=case) == reference(pattern, text, case), (pattern, text, case)
    start = time.perf_counter()
    match = parse_filter("name LIKE '%%%%%%%%%!' AND tags.modelhub.labels ILIKE '%a%a%a%a%a%a%a%a%!'")
    assert not match("vision." + "s" * 30, {"modelhub.labels": "a," * 2000})
    assert time.perf_counter() - start < 0.5  # a regular expression took seconds (minutes with more %)


@pytest.mark.django_db
def test_a_filter_longer_than_the_cap_is_refused(author):
    answer = author.get("/api/2.0/mlflow/registered-models/search", {"filter": "name LIKE '" + "%" * 2000 + "'"})
    assert answer.status_code == 400 and answer.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "at most 1,000" in answer.json()["message"]


@pytest.mark.django_db
def test_a_page_token_of_deep_json_is_invalid_not_a_500(author):
    import base64

    token = base64.urlsafe_b64encode(b"[" * 3000).decode()
    answer = author.get("/api/2.0/mlflow/registered-models/search", {"page_token": token})
    assert answer.status_code == 400 and answer.json()["error_code"] == "INVALID_PARAMETER_VALUE"


# --- Version strings (finding 6) -------------------------------------------------------------------


@pytest.mark.django_db
def test_version_strings_int_cannot_read_are_not_found_never_a_500(author, model):
    for version in ("²", "1" * 5000, "9" * 20):
        assert "versions are assembly ids" in error(author.get(f"/v2/models/vision.tiny/versions/{version}"), 404)
        error(author.get(f"/v1/models/vision.tiny/versions/{version}"), 404)
        error(author.get(f"/v1/models/vision.tiny/versions/{version}/metadata"), 404)
    for version in ("²", "1" * 5000):  # (20 digits: the /api/ middleware's out-of-range answer comes first)
        answer = author.get("/api/2.0/mlflow/model-versions/get", {"name": "vision.sentiment", "version": version})
        assert answer.status_code == 400 and answer.json()["error_code"] == "INVALID_PARAMETER_VALUE", answer.content
    from core.ids import parse_id
    from dashboard.kit import parse_id as kit_parse_id

    assert kit_parse_id is parse_id  # one parser, not a copy


# --- Deep JSON and refusals under /v1 and /v2 (finding 5) ------------------------------------------


@pytest.mark.django_db
def test_deep_json_and_oversized_bodies_get_the_protocols_error_object(author, model, settings):
    deep = "[" * 200_000
    assert "nested" in error(author.post("/v1/models/vision.tiny:predict", deep, content_type="application/json"), 400)
    assert "nested" in error(author.post("/v2/models/vision.tiny/infer", deep, content_type="text/plain"), 400)
    instances = {"instances": [{"inputs": ROW, "task_id": 0}], "x": json.loads("[" * 40 + "]" * 40)}
    error(author.post("/v1/models/vision.tiny:predict", json.dumps(instances), content_type="application/json"), 400)
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    assert "too large" in error(infer(author, {"inputs": [tensor("inputs", [1, 8], "FP32", ROW)]}), 413)
    assert not Prediction.objects.exists()


def test_decode_b64_follows_any_depth_without_recursion():
    from inference.tfserving_apis import _decode_b64

    deep = root = []
    for _ in range(100_000):
        deep.append([])
        deep = deep[0]
    deep.append({"b64": "aGk="})
    decoded = _decode_b64(root)
    for _ in range(100_000):
        decoded = decoded[0]
    assert decoded == ["hi"]


# --- OIP shapes and outputs (findings 7 and 14) ----------------------------------------------------


@pytest.mark.django_db
def test_oip_shapes_numpy_cannot_take_and_unknown_outputs_are_400_before_any_work(author, model, monkeypatch):
    fake_worker(monkeypatch)
    task = tensor("task_id", [1], "INT32", [0])
    huge = tensor("inputs", [0, 99999999999999999999], "BYTES", [])
    assert "at most 8 dimensions" in error(infer(author, {"inputs": [huge, task]}), 400)
    ones = tensor("inputs", [1] * 70, "FP32", [0.5])
    assert "at most 8 dimensions" in error(infer(author, {"inputs": [ones, task]}), 400)
    good = [tensor("inputs", [1, 8], "FP32", ROW), task]
    message = error(infer(author, {"inputs": good, "outputs": [{"name": "logits"}]}), 400)
    assert "Unknown output(s) ['logits']" in message
    assert not Prediction.objects.exists()  # refused before a prediction was queued


# --- One prediction per protocol request; the SavedModel kept per sha256 (finding 9) ----------------


@pytest.mark.django_db
def test_a_mixed_tfserving_batch_is_one_prediction_and_counted_as_mixed(author, model, monkeypatch, make_member):
    from rest_framework.test import APIClient

    fake_worker(monkeypatch)
    body = {"instances": [{"inputs": ROW, "task_id": task} for task in (1, 0, 1, 1)]}
    answer = author.post("/v1/models/vision.tiny:predict", json.dumps(body), content_type="application/json")
    assert answer.status_code == 200, answer.content
    assert [row["output_width"] for row in answer.json()["predictions"]] == [5, 3, 5, 5]
    assert answer.json()["predictions"][1]["outputs"] == [0.25] * 3 + [0.0, 0.0]
    (prediction,) = Prediction.objects.all()
    assert prediction.inputs["task_id"] == [1, 0, 1, 1] and len(prediction.inputs["inputs"]) == 4
    one_task = {"instances": [{"inputs": ROW, "task_id": 0}]}
    author.post("/v1/models/vision.tiny:predict", json.dumps(one_task), content_type="application/json")
    assert isinstance(Prediction.objects.latest("pk").inputs, list)  # one task: stored as before

    user, token = make_member("sam")
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    staff = APIClient()
    staff.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    from prometheus_client.parser import text_string_to_metric_families

    counted = {
        (sample.labels["assembly"], sample.labels["task"]): sample.value
        for family in text_string_to_metric_families(staff.get("/metrics").content.decode())
        for sample in family.samples
        if sample.name == "modelhub_predictions_total" and sample.labels["status"] == "succeeded"
    }
    pk = str(model["both"].pk)
    assert counted == {(pk, "mixed"): 1, (pk, "sentiment"): 1}


def test_the_worker_loads_a_savedmodel_once_per_sha256_and_runs_a_mixed_batch_in_one_call(monkeypatch, tmp_path):
    import tensorflow as tf

    from assemblies.work import predicting

    loads, calls = [], []

    class Loaded:
        def __init__(self):
            self.signatures = {"serving_default": self.serve}

        def serve(self, *, inputs, task_id):
            calls.append(task_id.numpy().tolist())
            widths = tf.constant([3, 5], tf.int32)
            return {"outputs": tf.ones([inputs.shape[0], 5]), "output_width": tf.gather(widths, task_id)}

    monkeypatch.setattr(predicting, "saved_model_dir", lambda assembly: tmp_path / assembly.blob.sha256)
    monkeypatch.setattr(tf.saved_model, "load", lambda path: loads.append(path) or Loaded())
    monkeypatch.setattr(predicting, "_saved_models", type(predicting._saved_models)())

    def assembly(sha):
        return SimpleNamespace(blob=SimpleNamespace(sha256=sha))

    specs = [{"name": "inputs", "dtype": "float32", "shape": [None, 8]}]
    stored = {"inputs": [ROW] * 3}
    rows = predicting._tensorflow_outputs(assembly("a"), specs, stored, np.asarray([1, 0, 1], np.int32))
    assert calls == [[1, 0, 1]] and [len(row) for row in rows] == [5, 3, 5]
    predicting._tensorflow_outputs(assembly("a"), specs, stored, np.asarray([0, 0, 0], np.int32))
    assert len(loads) == 1  # kept: not loaded again for the same sha256
    for sha in ("b", "c", "a"):
        predicting._tensorflow_outputs(assembly(sha), specs, stored, np.asarray([0, 0, 0], np.int32))
    assert [Path(path).name for path in loads] == ["a", "b", "c", "a"]  # at most two kept, least recently used dropped


# --- MLflow: throttle, backoff, SQL (finding 12) ---------------------------------------------------


@pytest.mark.django_db
def test_mlflow_download_uri_is_throttled_and_a_failed_build_waits_for_its_backoff(author, model, settings):
    from mlflow_api.models import FullModelArtifact

    head = model["heads"][0]
    query = {"name": "vision.sentiment", "version": str(head.version)}
    FullModelArtifact.objects.create(head=head, status="failed", error="boom", finished_at=timezone.now())
    assert author.get("/api/2.0/mlflow/model-versions/get-download-uri", query).status_code == 200
    assert FullModelArtifact.objects.get(head=head).status == "failed"  # within the backoff: not queued again
    listed = author.get("/api/2.0/mlflow-artifacts/artifacts", {"path": f"modelhub/vision.sentiment/{head.version}"})
    assert listed.status_code == 409 and "retry (after" in listed.json()["message"]
    FullModelArtifact.objects.filter(head=head).update(finished_at=timezone.now() - timedelta(minutes=10))
    assert author.get("/api/2.0/mlflow/model-versions/get-download-uri", query).status_code == 200
    assert FullModelArtifact.objects.get(head=head).status == "queued"  # after it: queued again

    settings.MODELHUB_THROTTLE_RATES = {**settings.MODELHUB_THROTTLE_RATES, "predict": "1/min"}
    author.get("/api/2.0/mlflow/model-versions/get-download-uri", query)
    refused = author.get("/api/2.0/mlflow/model-versions/get-download-uri", query)
    assert refused.status_code == 429 and refused.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    assert int(refused["Retry-After"]) >= 1


@pytest.mark.django_db
def test_mlflow_search_narrows_by_name_in_sql_and_sends_no_id_lists(author):
    backbone = backbone_row(author.user)
    for index in range(4):
        head_row(author.user, backbone, task=f"t{index}", status=APPROVED)
    for path in ("model-versions/search", "registered-models/search"):
        with CaptureQueriesContext(connection) as queries:
            answer = author.get(f"/api/2.0/mlflow/{path}", {"filter": "name = 'vision.t2'"})
        assert answer.status_code == 200, answer.content
        found = answer.json().get("model_versions") or answer.json()["registered_models"]
        assert [entry["name"] for entry in found] == ["vision.t2"]
        sql = [query["sql"] for query in queries.captured_queries]
        assert any("'t2'" in q for q in sql), sql  # the name narrowed the query
        if path == "model-versions/search":  # (registered models read the versions of one page's tasks)
            assert not [q for q in sql if re.search(r'"task_id" IN \(\d', q)], sql  # subqueries, not lists
    page = author.get("/api/2.0/mlflow/model-versions/search", {"max_results": 3})
    rest = author.get("/api/2.0/mlflow/model-versions/search", {"page_token": page.json()["next_page_token"]})
    names = [v["name"] for v in page.json()["model_versions"] + rest.json()["model_versions"]]
    assert names == [f"vision.t{i}" for i in range(4)] and "next_page_token" not in rest.json()


# --- The bundle (finding 13) -----------------------------------------------------------------------


def test_bundle_rewrites_run_one_at_a_time(monkeypatch, tmp_path, settings):
    from bundles import work

    settings.MODELHUB_BUNDLE_ROOT = tmp_path
    spans = []

    def slow_write(root):
        start = time.monotonic()
        time.sleep(0.3)
        spans.append((start, time.monotonic()))

    monkeypatch.setattr(work, "_write_bundle", slow_write)
    threads = [threading.Thread(target=work.bundle_write) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (first, second) = sorted(spans)
    assert second[0] >= first[1]  # the second waited for the first


def test_bundle_files_are_staged_under_unique_names(tmp_path):
    from bundles.work import _write_atomically

    target = tmp_path / "tfserving" / "models.config"
    (tmp_path / "tfserving" / ".models.config.partial").mkdir(parents=True)  # the old fixed staging name, taken
    _write_atomically(target, "one\n")
    _write_atomically(target, "two\n")
    assert target.read_text() == "two\n"
    assert sorted(p.name for p in target.parent.iterdir()) == [".models.config.partial", "models.config"]


def _zip_blob(marker: bytes):
    import io

    from artifacts.services import blob_store_bytes

    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as zipped:
        zipped.writestr("model/saved_model.pb", marker)
    return blob_store_bytes(data=data.getvalue()).blob


@pytest.mark.django_db
def test_bundle_never_replaces_a_loaded_version_and_stays_in_its_root(author, model, monkeypatch, tmp_path, settings):
    from bundles import work

    root = tmp_path / "bundle"
    settings.MODELHUB_BUNDLE_ROOT = root
    assembly = model["both"]
    Assembly.objects.filter(pk=assembly.pk).update(blob=_zip_blob(b"ours"))
    folder = root / "tfserving" / "vision.tiny" / str(assembly.pk)
    fetch = work.blob_fetch_verified

    def fetch_while_another_task_finishes(*, blob, destination):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "saved_model.pb").write_bytes(b"theirs")  # put in place (and loaded) meanwhile
        return fetch(blob=blob, destination=destination)

    monkeypatch.setattr(work, "blob_fetch_verified", fetch_while_another_task_finishes)
    work.bundle_write()
    assert (folder / "saved_model.pb").read_bytes() == b"theirs"

    monkeypatch.setattr(work, "blob_fetch_verified", fetch)
    model["backbone"].__class__.objects.filter(pk=model["backbone"].pk).update(name="../../../../escape")
    work.bundle_write()
    assert not (tmp_path / "escape").exists()
    assert (root / "tfserving" / "models.config").exists()


# --- An alias moved forward and back (P1) ----------------------------------------------------------


@pytest.mark.django_db
def test_an_alias_moved_back_labels_the_older_assembly_again(author, monkeypatch, django_capture_on_commit_callbacks):
    from assemblies.services import assembly_create
    from bundles.selectors import bundle_models
    from inference.selectors import model_version_get
    from releases.models import Alias

    sent = []
    monkeypatch.setattr("modelhub.celery.app.send_task", lambda name, *args, **kwargs: sent.append(name))
    backbone = backbone_row(author.user)
    first = head_row(author.user, backbone, task="sentiment", status=APPROVED)
    second = head_row(author.user, backbone, task="sentiment", status=APPROVED, description="v2")
    alias = Alias.objects.create(task=first.task, name="champion", head=first)

    def resolve() -> Assembly:
        assembly, _ = assembly_create(team=backbone.team, user=author.user, backbone_id=backbone.pk, head_ids=None,
                                      alias="champion")  # fmt: skip
        Assembly.objects.filter(pk=assembly.pk).update(status=Assembly.Status.READY, blob=_zip_blob(b"x"))
        return assembly

    older = resolve()
    Alias.objects.filter(pk=alias.pk).update(head=second)
    newer = resolve()
    Alias.objects.filter(pk=alias.pk).update(head=first)
    with django_capture_on_commit_callbacks(execute=True):
        again = resolve()
    assert again.pk == older.pk and newer.pk > older.pk
    assert model_version_get(user=author.user, name="vision.tiny", version=None).pk == older.pk
    assert model_version_get(user=author.user, name="vision.tiny", version=None, label="champion").pk == older.pk
    (served,) = bundle_models()
    assert served.labels == {"champion": older.pk} and older.pk in served.loaded_versions
    assert "bundles.rewrite" in sent  # the reused ready row was re-resolved: the bundle follows


# --- Metrics (finding 16) ----------------------------------------------------------------------------


def test_queue_depths_are_read_passively(monkeypatch):
    from metrics import collectors

    class Missing(Exception):
        pass

    declared = []

    class Channel:
        is_open = True

        def queue_declare(self, *, queue, passive):
            declared.append((queue, passive))
            if queue == "training":
                raise Missing(f"NOT_FOUND - no queue {queue!r}")
            return SimpleNamespace(message_count=2)

    class Connection:
        channel_errors = (Missing,)
        default_channel = Channel()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def ensure_connection(self, **kwargs):
            pass

    monkeypatch.setattr("modelhub.celery.app.connection_for_read", lambda: Connection())
    depths = collectors.queue_depths()
    assert declared and all(passive for _, passive in declared)  # a scrape never creates a queue
    assert depths["training"] == 0 and depths["default"] == 2
