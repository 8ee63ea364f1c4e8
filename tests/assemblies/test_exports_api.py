"""Exports of an assembly through the HTTP API, without a worker: the request spec (400 naming the field),
409 for an assembly that is not ready, 404 for another team, the same request answering the existing
export (a failed one queued again), list, detail, download, the dashboard's Exports section, and the
worker's refusals recorded on the row (it never dies of an input). The real conversion with a real
worker is tests/assemblies/test_exports_worker.py (slow)."""

import pytest

from assemblies import services
from assemblies.models import Assembly, AssemblyExport
from heads.models import HeadVersion
from tests.view_helpers import assembly_row, backbone_row, head_row

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(monkeypatch) -> list:
    """Capture the tasks services queue (no worker runs): [(task name, row id)]."""
    sent = []
    monkeypatch.setattr(services, "queue_on_commit", lambda name, pk: sent.append((name, pk)))
    return sent


@pytest.fixture
def author(api_client_for):
    return api_client_for("alice")


@pytest.fixture
def ready(author):
    backbone = backbone_row(author.user)
    heads = [
        head_row(author.user, backbone, task="sentiment", status=HeadVersion.Status.APPROVED, output_width=3),
        head_row(author.user, backbone, task="topic", status=HeadVersion.Status.APPROVED, output_width=5),
    ]
    return assembly_row(author.user, backbone, heads, name="vision-v1")


def test_request_queues_one_export_and_the_same_request_answers_it(author, ready, queued):
    url = f"/api/assemblies/{ready.pk}/exports/"
    first = author.post(url, {"format": "onnx"}, format="json")
    assert first.status_code == 202, first.json()
    body = first.json()
    assert (body["format"], body["quantization"], body["status"], body["existing"]) == ("onnx", "none", "queued", False)
    assert body["assembly"] == ready.pk and body["download_url"] is None and body["report"] == {}
    assert queued == [("assemblies.export", body["id"])]
    again = author.post(url, {"format": "ONNX", "quantization": "none"}, format="json")
    assert (again.status_code, again.json()["id"], again.json()["existing"]) == (200, body["id"], True)
    other = author.post(url, {"format": "litert", "quantization": "dynamic_int8"}, format="json")
    assert other.status_code == 202 and other.json()["id"] != body["id"]
    assert AssemblyExport.objects.count() == 2 and len(queued) == 2
    listed = author.get(url).json()
    assert listed["count"] == 2 and [e["format"] for e in listed["results"]] == ["litert", "onnx"]


def test_a_failed_export_is_queued_again(author, ready, queued):
    url = f"/api/assemblies/{ready.pk}/exports/"
    export_id = author.post(url, {"format": "onnx"}, format="json").json()["id"]
    AssemblyExport.objects.filter(pk=export_id).update(status="failed", error="boom", progress={"fraction": 0.5})
    again = author.post(url, {"format": "onnx"}, format="json")
    assert again.status_code == 200 and again.json()["existing"] is True
    assert (again.json()["status"], again.json()["error"], again.json()["progress"]) == ("queued", "", {})
    assert queued == [("assemblies.export", export_id)] * 2


@pytest.mark.parametrize(
    ("payload", "field", "fragment"),
    [
        ({"format": "tflite"}, "format", "must be one of onnx, litert; received 'tflite'"),
        ({}, "format", "This field is required: one of onnx, litert"),
        ({"format": "onnx", "quantization": "int4"}, "quantization", "one of none, float16, dynamic_int8"),
        ({"format": 3}, "format", "received 3"),
        ({"format": "onnx", "dataset": "five"}, "dataset", "must be the id of one of the team's ready datasets"),
        ({"format": "onnx", "dataset": 0}, "dataset", "a positive integer, GET /api/datasets/); received 0"),
        ({"format": "onnx", "dataset": True}, "dataset", "received True"),
        ({"format": "onnx", "dataset": 99999}, "dataset", "Dataset 99999 was not found in this assembly's team"),
    ],
    ids=["format", "missing-format", "quantization", "format-number", "dataset-text", "dataset-0", "dataset-bool",
         "dataset-missing"],
)  # fmt: skip
def test_bad_requests_are_a_400_naming_the_field_and_store_nothing(author, ready, queued, payload, field, fragment):
    response = author.post(f"/api/assemblies/{ready.pk}/exports/", payload, format="json")
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["code"] == "invalid" and f"{field}: " in error["message"]
    assert fragment in error["detail"][field][0]
    assert not AssemblyExport.objects.exists() and queued == []


@pytest.mark.parametrize("quantization", ["float16", "dynamic_int8"])
def test_onnx_takes_every_quantization(author, ready, queued, quantization):
    response = author.post(
        f"/api/assemblies/{ready.pk}/exports/", {"format": "onnx", "quantization": quantization}, format="json"
    )
    assert response.status_code == 202, response.json()
    assert (response.json()["format"], response.json()["quantization"]) == ("onnx", quantization)


def test_a_named_dataset_is_checked_through_trainings_reader(author, ready, queued, api_client_for):
    """The team's, ready, fitting the backbone (training's rule, via core.datasets): else a 400 saying why."""
    from tests.training.helpers import dataset_row

    api_client_for("mallory", team="audio")
    foreign = dataset_row(author.user, team="audio", name="theirs")
    pending = dataset_row(author.user, name="pending", status="validating")
    misfit = dataset_row(author.user, name="wide", input_shape=(5,))
    good, other = dataset_row(author.user, name="eight"), dataset_row(author.user, name="eight-b")
    url = f"/api/assemblies/{ready.pk}/exports/"
    cases = [
        (foreign, f"Dataset {foreign.pk} was not found in this assembly's team"),
        (pending, "is 'validating', not ready"),
        (misfit, "does not fit the assembly's backbone: Dataset 'wide' has inputs x (float32, [5])"),
    ]
    for dataset, fragment in cases:
        response = author.post(url, {"format": "litert", "dataset": dataset.pk}, format="json")
        assert response.status_code == 400, response.json()
        assert fragment in response.json()["error"]["detail"]["dataset"][0], response.json()
    assert not AssemblyExport.objects.exists() and queued == []

    first = author.post(url, {"format": "litert", "dataset": str(good.pk)}, format="json")
    assert first.status_code == 202 and first.json()["dataset"] == good.pk
    export = AssemblyExport.objects.get()
    assert export.dataset_id == good.pk and queued == [("assemblies.export", export.pk)]
    same = author.post(url, {"format": "litert", "dataset": good.pk}, format="json")
    assert same.status_code == 200 and len(queued) == 1
    running = author.post(url, {"format": "litert", "dataset": other.pk}, format="json")
    assert running.status_code == 409 and running.json()["error"]["detail"] == {"current_status": "queued"}
    AssemblyExport.objects.filter(pk=export.pk).update(status="ready")
    again = author.post(url, {"format": "litert", "dataset": other.pk}, format="json")
    assert (again.status_code, again.json()["status"], again.json()["dataset"]) == (200, "queued", other.pk)
    assert queued == [("assemblies.export", export.pk)] * 2
    left_out = author.post(url, {"format": "litert"}, format="json")
    assert left_out.status_code == 200 and left_out.json()["dataset"] == other.pk and len(queued) == 2


@pytest.mark.parametrize("status", ["queued", "building", "failed"])
def test_only_a_ready_assembly_exports(author, queued, status):
    backbone = backbone_row(author.user)
    head = head_row(author.user, backbone, status=HeadVersion.Status.APPROVED)
    assembly = assembly_row(author.user, backbone, [head], status=status)
    response = author.post(f"/api/assemblies/{assembly.pk}/exports/", {"format": "onnx"}, format="json")
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["detail"] == {"current_status": status}
    assert f"is '{status}'; only a ready (built and verified) assembly can be exported" in error["message"]
    assert ("Build it again" if status == "failed" else "Wait until it is ready") in error["message"]
    assert not AssemblyExport.objects.exists() and ("assemblies.export", 1) not in queued
    assert [name for name, _ in queued if name == "assemblies.export"] == []


def test_another_team_gets_404_everywhere(author, ready, queued, api_client_for):
    export_id = author.post(f"/api/assemblies/{ready.pk}/exports/", {"format": "onnx"}, format="json").json()["id"]
    stranger = api_client_for("mallory", team="audio")
    base = f"/api/assemblies/{ready.pk}/exports/"
    assert stranger.post(base, {"format": "litert"}, format="json").status_code == 404
    for path in (base, f"{base}{export_id}/", f"{base}{export_id}/download/"):
        assert stranger.get(path).status_code == 404, path
    assert AssemblyExport.objects.count() == 1
    # An export id of another assembly is not found either.
    assert author.get(f"/api/assemblies/{ready.pk}/exports/{export_id + 99}/").status_code == 404


def test_detail_and_download_once_ready(author, ready, queued):
    from artifacts.services import blob_store_bytes

    export_id = author.post(f"/api/assemblies/{ready.pk}/exports/", {"format": "onnx"}, format="json").json()["id"]
    detail_url = f"/api/assemblies/{ready.pk}/exports/{export_id}/"
    pending = author.get(f"{detail_url}download/")
    assert pending.status_code == 409 and pending.json()["error"]["detail"] == {"current_status": "queued"}
    data = b"onnx bytes of the export"
    report = {"format": "onnx", "passed": True, "max_abs_diff": 1e-6, "tasks": [{"task_id": 0, "max_abs_diff": 1e-6}]}
    blob = blob_store_bytes(data=data).blob
    AssemblyExport.objects.filter(pk=export_id).update(
        status="ready",
        blob=blob,
        report=report,
        size_bytes=len(data),
        progress={"fraction": 1.0, "message": "verified"},
    )
    body = author.get(detail_url).json()
    assert (body["status"], body["size_bytes"], body["sha256"], body["report"]) == (
        "ready",
        len(data),
        blob.sha256,
        report,
    )
    assert body["download_url"] == f"{detail_url}download/"
    download = author.get(body["download_url"])
    assert download.status_code == 200 and b"".join(download.streaming_content) == data
    assert 'filename="vision-v1-none.onnx"' in download["Content-Disposition"]


def test_the_schema_documents_the_exports(author):
    schema = author.get("/api/schema/", {"format": "json"}).json()
    paths = schema["paths"]
    for path in ("/api/assemblies/{id}/exports/", "/api/assemblies/{id}/exports/{eid}/",
                 "/api/assemblies/{id}/exports/{eid}/download/"):  # fmt: skip
        assert path in paths, path
    create = paths["/api/assemblies/{id}/exports/"]["post"]
    assert {"200", "202", "409"} <= set(create["responses"])
    examples = create["requestBody"]["content"]["application/json"]["examples"]
    assert any(example["value"] == {"format": "onnx", "quantization": "none"} for example in examples.values())
    assert any("dataset" in example["value"] for example in examples.values())
    body = create["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert "dataset" in schema["components"]["schemas"][body]["properties"]
    assert "dataset" in schema["components"]["schemas"]["ExportOutput"]["properties"]
    components = schema["components"]["schemas"]
    assert components["ExportFormatEnum"]["enum"] == ["onnx", "litert"]
    assert "runtime" in components["PredictionOutput"]["properties"]


def test_the_dashboard_requests_and_lists_exports(client, author, ready, queued):
    client.force_login(author.user)
    page = client.get(f"/assemblies/{ready.pk}/").content.decode()
    assert 'id="exports"' in page and 'id="export-form"' in page and 'id="export-table"' not in page
    response = client.post(f"/assemblies/{ready.pk}/exports/", {"format": "litert", "quantization": "float16"})
    assert response.status_code == 302 and response["Location"].endswith(f"/assemblies/{ready.pk}/#exports")
    export = AssemblyExport.objects.get()
    assert (export.format, export.quantization, export.created_by) == ("litert", "float16", author.user)
    page = client.get(f"/assemblies/{ready.pk}/").content.decode()
    assert 'id="export-table"' in page and f'data-poll-url="/api/assemblies/{ready.pk}/exports/{export.pk}/"' in page
    bad = client.post(f"/assemblies/{ready.pk}/exports/", {"format": "zip"}, follow=True).content.decode()
    assert "must be one of onnx, litert; received &#x27;zip&#x27;" in bad
    assert AssemblyExport.objects.count() == 1


def test_the_worker_records_a_refusal_on_the_row(author, ready, queued, monkeypatch):
    """No TensorFlow here: the components and the library are replaced; the row ends failed with the message."""
    import contextlib
    import sys
    import types

    from assemblies.work import exporting
    from modelhub.ml.errors import MLError

    export_id = author.post(f"/api/assemblies/{ready.pk}/exports/", {"format": "litert"}, format="json").json()["id"]

    @contextlib.contextmanager
    def components(assembly):
        yield types.SimpleNamespace(backbone=None, heads=[], cut_trunk=lambda: None)

    def refuse(**kwargs):
        kwargs["progress"](0.3, "converting")
        raise MLError("Layer 'vectorize' (TextVectorization) cannot be exported to litert: export from its output.")

    monkeypatch.setattr(exporting, "assembly_components", components)
    monkeypatch.setattr(exporting, "saved_model_dir", lambda assembly: "/nowhere")
    monkeypatch.setitem(sys.modules, "modelhub.ml.export", types.SimpleNamespace(export_assembly=refuse))
    exporting.export_build(export_id=export_id)
    export = AssemblyExport.objects.get(pk=export_id)
    assert export.status == "failed" and "cannot be exported to litert" in export.error
    assert (export.attempts, export.blob_id, export.progress["message"]) == (1, None, "converting")

    monkeypatch.setitem(sys.modules, "modelhub.ml.export", types.SimpleNamespace(export_assembly=lambda **kw: 1 / 0))
    AssemblyExport.objects.filter(pk=export_id).update(status="queued")
    exporting.export_build(export_id=export_id)
    export.refresh_from_db()
    assert export.status == "failed" and export.error.startswith("The litert export failed: ZeroDivisionError")

    Assembly.objects.filter(pk=ready.pk).update(status="building")
    AssemblyExport.objects.filter(pk=export_id).update(status="queued")
    exporting.export_build(export_id=export_id)
    export.refresh_from_db()
    assert export.status == "failed" and "is 'building', not ready" in export.error


def test_the_worker_checks_the_dataset_again_and_records_why_on_the_row(author, ready, queued, monkeypatch):
    """A dataset that stopped fitting between the request and the worker fails the export with the reason."""
    import contextlib
    import sys
    import types

    from assemblies.work import exporting
    from tests.training.helpers import dataset_row

    dataset = dataset_row(author.user, name="eight")
    url = f"/api/assemblies/{ready.pk}/exports/"
    export_id = author.post(url, {"format": "onnx", "dataset": dataset.pk}, format="json").json()["id"]
    type(dataset).objects.filter(pk=dataset.pk).update(status="rejected")

    @contextlib.contextmanager
    def components(assembly):
        yield types.SimpleNamespace(backbone=None, heads=[], cut_trunk=lambda: None)

    called = []
    monkeypatch.setattr(exporting, "assembly_components", components)
    monkeypatch.setattr(exporting, "saved_model_dir", lambda assembly: "/nowhere")
    monkeypatch.setitem(sys.modules, "modelhub.ml.export", types.SimpleNamespace(export_assembly=called.append))
    exporting.export_build(export_id=export_id)
    export = AssemblyExport.objects.get(pk=export_id)
    assert export.status == "failed" and called == [] and export.blob_id is None
    assert f"Dataset {dataset.pk} ('eight') is 'rejected', not ready" in export.error
    assert "ask again without it or with another dataset" in export.error


def test_a_lost_export_worker_is_reaped(author, ready, queued, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    from core import tracked_work
    from core.tracked_work import REAPED_MESSAGE, reap_stale_work

    assert AssemblyExport in tracked_work.tracked_models()
    # Only exports: other apps' rows are not this test's business.
    monkeypatch.setattr(tracked_work, "tracked_models", lambda: [AssemblyExport])

    export_id = author.post(f"/api/assemblies/{ready.pk}/exports/", {"format": "onnx"}, format="json").json()["id"]
    long_ago = timezone.now() - timedelta(days=1)
    AssemblyExport.objects.filter(pk=export_id).update(status="exporting", started_at=long_ago, heartbeat_at=long_ago)
    assert reap_stale_work()["assemblies.AssemblyExport"] == 1
    export = AssemblyExport.objects.get(pk=export_id)
    assert export.status == "failed" and export.error.startswith(REAPED_MESSAGE.split("{")[0])
