"""POST /api/imports/ from staged uploads (JSON), the multipart form, and the optional feature layer."""

import contextlib
import os

import pytest
from django.core.management import CommandError, call_command

from artifacts.models import Blob, Upload
from heads.models import ModelImport, ModelImportFile
from tests.registry_helpers import wait_status

FIELDS = {"team": "vision", "backbone_name": "shared"}


def stage(client, tmp_path, name: str, *, team: str = "vision", data: bytes | None = None) -> dict:
    """Send one file to POST /api/uploads/ and return its body."""
    path = tmp_path / name
    path.write_bytes(os.urandom(2_000) if data is None else data)
    with open(path, "rb") as handle:
        response = client.post("/api/uploads/", {"team": team, "file": handle}, format="multipart")
    assert response.status_code == 201, response.json()
    return response.json()


def post_json(client, **body):
    return client.post("/api/imports/", {**FIELDS, **body}, format="json")


def post_multipart(client, paths, **fields):
    with contextlib.ExitStack() as stack:
        handles = [stack.enter_context(open(p, "rb")) for p in paths]
        return client.post("/api/imports/", {**FIELDS, "files": handles, **fields}, format="multipart")


def assert_rejected(response, field: str, *fragments: str) -> dict:
    """Assert a 400 in the error envelope whose detail names `field`, and that nothing was stored."""
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert set(error) == {"code", "message", "detail"}
    assert field in error["detail"], error
    for fragment in fragments:
        assert fragment in error["message"], error
    assert ModelImport.objects.count() == 0 and ModelImportFile.objects.count() == 0
    return error


@pytest.fixture
def ana(api_client_for):
    return api_client_for("ana")


# --- JSON: imports from staged uploads -----------------------------------------------------


@pytest.mark.django_db
def test_json_import_from_uploads_queues_the_files_in_order(ana, tmp_path, django_capture_on_commit_callbacks):
    topic = stage(ana, tmp_path, "Topic Model.keras")
    sentiment = stage(ana, tmp_path, "sentiment.keras")
    with django_capture_on_commit_callbacks() as queued:
        response = post_json(ana, uploads=[topic["id"], sentiment["id"]])
    assert response.status_code == 202, response.json()
    body = response.json()
    assert (body["status"], body["feature_layer"], body["branches"]) == ("queued", "", False)
    assert len(queued) == 1  # heads.run_import, sent once the transaction commits

    model_import = ModelImport.objects.get(pk=body["id"])
    assert (model_import.team.slug, model_import.backbone_name, model_import.created_by.username) == (
        "vision",
        "shared",
        "ana",
    )
    files = list(model_import.files.values_list("position", "filename", "task_slug", "blob__sha256"))
    assert files == [
        (0, "Topic Model.keras", "topic-model", topic["sha256"]),
        (1, "sentiment.keras", "sentiment", sentiment["sha256"]),
    ]


@pytest.mark.django_db
def test_json_import_stores_tasks_feature_layer_and_branches(ana, tmp_path):
    ids = [stage(ana, tmp_path, name)["id"] for name in ("a.keras", "b.keras")]
    response = post_json(ana, uploads=ids, tasks=["sentiment", "topic"], feature_layer="features", branches=True)
    assert response.status_code == 202, response.json()
    detail = ana.get(f"/api/imports/{response.json()['id']}/").json()
    assert (detail["feature_layer"], detail["branches"]) == ("features", True)
    model_import = ModelImport.objects.get()
    assert (model_import.feature_layer, model_import.branches) == ("features", True)
    assert list(model_import.files.values_list("filename", "task_slug")) == [
        ("a.keras", "sentiment"),
        ("b.keras", "topic"),
    ]


@pytest.mark.django_db
def test_one_upload_serves_two_imports_without_new_blobs(ana, tmp_path):
    upload = stage(ana, tmp_path, "sentiment.keras")
    resent = stage(ana, tmp_path, "sentiment.keras", data=(tmp_path / "sentiment.keras").read_bytes())
    assert resent["deduplicated"] is True and resent["sha256"] == upload["sha256"]
    blobs_before = Blob.objects.count()
    for ids in ([upload["id"]], [upload["id"]], [resent["id"]]):
        response = post_json(ana, uploads=ids, feature_layer="features")
        assert response.status_code == 202, response.json()
    assert Blob.objects.count() == blobs_before == 1
    assert ModelImport.objects.count() == 3
    assert set(ModelImportFile.objects.values_list("blob__sha256", flat=True)) == {upload["sha256"]}


@pytest.mark.django_db
def test_single_upload_without_feature_layer_is_rejected(ana, tmp_path):
    upload = stage(ana, tmp_path, "sentiment.keras")
    for body in ({}, {"feature_layer": ""}):
        error = assert_rejected(post_json(ana, uploads=[upload["id"]], **body), "feature_layer")
        assert error["message"].startswith("feature_layer is required when importing a single model")


@pytest.mark.django_db
def test_another_teams_upload_is_not_found_like_a_missing_id(ana, api_client_for, tmp_path):
    mine = stage(ana, tmp_path, "mine.keras")["id"]
    audio = api_client_for("otto", team="audio")
    theirs = stage(audio, tmp_path, "secret-audio-model.keras", team="audio")
    missing_id = theirs["id"] + 1000

    foreign = assert_rejected(post_json(ana, uploads=[mine, theirs["id"]]), "uploads", "not found")
    unknown = assert_rejected(post_json(ana, uploads=[mine, missing_id]), "uploads", "not found")
    assert foreign["code"] == unknown["code"] == "upload_not_found"
    assert foreign["message"].replace(str(theirs["id"]), "N") == unknown["message"].replace(str(missing_id), "N")
    assert "audio" not in foreign["message"] and "secret" not in str(foreign)
    assert Upload.objects.get(pk=theirs["id"]).team.slug == "audio"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("case", "field", "fragment"),
    [
        ("duplicate", "uploads", "listed more than once"),
        ("empty", "uploads", "at least one upload id"),
        ("too_many", "uploads", "at most 2 files, received 3"),
        ("tasks_mismatch", "tasks", "'tasks' has 1 entries but 3 files were sent; give one per file."),
        ("tasks_not_slugs", "tasks", "Invalid task slug 'Not A Slug'"),
        ("not_keras", "uploads", "Expected a .keras file, received 'notes.txt'"),
        ("not_ids", "uploads", "A valid integer is required."),
        ("missing_uploads", "uploads", "This field is required."),
        ("bad_backbone_name", "backbone_name", "Invalid backbone name"),
    ],
)
def test_json_import_input_errors_store_nothing(ana, tmp_path, settings, case, field, fragment):
    a, b, c = (stage(ana, tmp_path, f"{name}.keras")["id"] for name in ("a", "b", "c"))
    body = {
        "duplicate": {"uploads": [a, b, a]},
        "empty": {"uploads": []},
        "too_many": {"uploads": [a, b, c]},
        "tasks_mismatch": {"uploads": [a, b, c], "tasks": ["only-one"]},
        "tasks_not_slugs": {"uploads": [a, b], "tasks": ["ok", "Not A Slug"]},
        "not_keras": {"uploads": [a, stage(ana, tmp_path, "notes.txt")["id"]]},
        "not_ids": {"uploads": [a, "b"]},
        "missing_uploads": {},
        "bad_backbone_name": {"uploads": [a, b], "backbone_name": "no spaces please"},
    }[case]
    if case == "too_many":
        settings.DATA_UPLOAD_MAX_NUMBER_FILES = 2
    assert_rejected(post_json(ana, **body), field, fragment)


@pytest.mark.django_db
def test_json_import_into_a_team_you_are_not_in_is_404(ana, api_client_for, tmp_path):
    ids = [stage(ana, tmp_path, name)["id"] for name in ("a.keras", "b.keras")]
    outsider = api_client_for("mallory", team="audio")
    response = post_json(outsider, uploads=ids)
    assert response.status_code == 404 and response.json()["error"]["code"] == "team_not_found"
    assert ModelImport.objects.count() == 0


# --- Multipart: unchanged fields, optional feature layer -----------------------------------


@pytest.mark.django_db
def test_multipart_import_still_works(ana, tmp_path):
    paths = [tmp_path / "sentiment.keras", tmp_path / "topic.keras"]
    for path in paths:
        path.write_bytes(os.urandom(1_000))
    response = post_multipart(ana, paths, feature_layer="features", tasks='["s", "t"]')
    assert response.status_code == 202, response.json()
    assert (response.json()["feature_layer"], response.json()["branches"]) == ("features", False)
    without_layer = post_multipart(ana, paths, branches="true")
    assert without_layer.status_code == 202, without_layer.json()
    first, second = ModelImport.objects.order_by("pk")
    assert list(first.files.values_list("filename", "task_slug")) == [("sentiment.keras", "s"), ("topic.keras", "t")]
    assert (second.feature_layer, second.branches) == ("", True)
    assert list(second.files.values_list("task_slug", flat=True)) == ["sentiment", "topic"]
    assert Blob.objects.count() == 2


@pytest.mark.django_db
def test_multipart_single_file_without_feature_layer_stores_nothing(ana, tmp_path):
    path = tmp_path / "sentiment.keras"
    path.write_bytes(os.urandom(1_000))
    assert_rejected(post_multipart(ana, [path]), "feature_layer", "when importing a single model")
    assert Blob.objects.count() == 0


@pytest.mark.django_db
def test_schema_documents_json_and_multipart_bodies(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    content = schema["paths"]["/api/imports/"]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data"}
    components = schema["components"]["schemas"]
    json_body = components[content["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]
    form_body = components[content["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]]
    assert set(json_body["required"]) == {"team", "backbone_name", "uploads"}
    assert set(form_body["required"]) == {"team", "backbone_name", "files"}
    assert {"feature_layer", "branches", "tasks"} <= set(json_body["properties"]) & set(form_body["properties"])
    output = components["ImportOutput"]["properties"]
    assert {"feature_layer", "branches"} <= set(output)


# --- manage.py import_models ---------------------------------------------------------------


@pytest.mark.django_db
def test_import_models_command_feature_layer_is_optional_and_branches_is_stored(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "sentiment.keras").write_bytes(os.urandom(1_000))
    with pytest.raises(CommandError, match="feature_layer is required when importing a single model"):
        call_command("import_models", str(folder), "--team", "vision", "--backbone-name", "shared")
    assert ModelImport.objects.count() == 0

    (folder / "topic.keras").write_bytes(os.urandom(1_000))
    ran = []

    def fake_import_run(*, import_id):  # the worker side is not under test here
        ran.append(import_id)
        model_import = ModelImport.objects.get(pk=import_id)
        model_import.status = ModelImport.Status.SUCCEEDED
        return model_import

    monkeypatch.setattr("heads.management.commands.import_models.import_run", fake_import_run)
    call_command("import_models", str(folder), "--team", "vision", "--backbone-name", "shared", "--branches")
    model_import = ModelImport.objects.get()
    assert ran == [model_import.pk]
    assert (model_import.feature_layer, model_import.branches) == ("", True)
    assert list(model_import.files.values_list("task_slug", flat=True)) == ["sentiment", "topic"]


# --- End to end with a worker ---------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_json_import_from_uploads_runs_end_to_end(api_client_for, model_files, celery_worker):
    client = api_client_for("ana")
    ids = []
    for key in ("full_sentiment", "full_topic"):
        with open(model_files[key], "rb") as handle:
            response = client.post("/api/uploads/", {"team": "vision", "file": handle}, format="multipart")
        assert response.status_code == 201, response.json()
        ids.append(response.json()["id"])
    response = post_json(client, uploads=ids, feature_layer="features")
    assert response.status_code == 202, response.json()
    body = wait_status(client, f"/api/imports/{response.json()['id']}/", timeout=120)
    assert body["status"] == "succeeded", body
    assert [(r["task"], r["output_width"], r["ok"]) for r in body["report"]] == [
        ("sentiment", 3, True),
        ("topic", 5, True),
    ]
    heads = client.get(f"/api/heads/?backbone={body['backbone']}").json()["results"]
    assert sorted((h["task"], h["status"]) for h in heads) == [("sentiment", "draft"), ("topic", "draft")]
