"""Imports of K full models: one backbone (deduplicated) + K draft heads, all or nothing."""

import contextlib

import pytest
from django.core.management import call_command

from backbones.models import BackboneVersion
from heads.models import HeadVersion, ModelImport
from tests.registry_helpers import ready_backbone, wait_status

pytestmark = pytest.mark.django_db(transaction=True)


def post_import(client, paths, **fields):
    with contextlib.ExitStack() as stack:
        handles = [stack.enter_context(open(p, "rb")) for p in paths]
        return client.post(
            "/api/imports/",
            {"team": "vision", "backbone_name": "shared", "feature_layer": "features", "files": handles, **fields},
            format="multipart",
        )


def test_import_registers_one_backbone_and_a_draft_head_per_file(api_client_for, model_files, celery_worker):
    client = api_client_for("ana")
    existing = ready_backbone(client, model_files["backbone"], name="shared")
    paths = [model_files["full_sentiment"], model_files["full_topic"], model_files["full_box"]]
    response = post_import(client, paths)
    assert response.status_code == 202, response.json()
    body = wait_status(client, f"/api/imports/{response.json()['id']}/", timeout=120)
    assert body["status"] == "succeeded", body
    assert body["backbone"] == existing["id"]  # deduplicated against the uploaded version
    assert [(r["task"], r["output_width"], r["ok"]) for r in body["report"]] == [
        ("sentiment", 3, True),
        ("topic", 5, True),
        ("box", 4, True),
    ]
    assert BackboneVersion.objects.count() == 1
    heads = client.get(f"/api/heads/?backbone={existing['id']}").json()["results"]
    assert sorted((h["task"], h["status"]) for h in heads) == [
        ("box", "draft"),
        ("sentiment", "draft"),
        ("topic", "draft"),
    ]


def test_import_with_bad_files_registers_nothing_and_names_each(api_client_for, model_files, celery_worker):
    client = api_client_for("ana")
    paths = [
        model_files["full_sentiment"],
        model_files["full_other_backbone"],
        model_files["lambda"],
        model_files["corrupt"],
    ]
    response = post_import(client, paths, tasks='["a", "b", "c", "d"]')
    body = wait_status(client, f"/api/imports/{response.json()['id']}/", timeout=120)
    assert body["status"] == "failed"
    assert "Nothing was imported: 3 of 4 files failed" in body["error"]
    report = {r["filename"]: r for r in body["report"]}
    assert report["sentiment.keras"]["ok"] is False and "error" not in report["sentiment.keras"]
    # Same architecture, other weights: the error names the first layer whose weights differ.
    other_error = report["other.keras"]["error"]
    assert "layer 'hidden' (Dense) weight" in other_error and "differs" in other_error, other_error
    assert "Lambda" in report["lambda.keras"]["error"]
    assert report["corrupt.keras"]["error"]
    assert BackboneVersion.objects.count() == 0 and HeadVersion.objects.count() == 0


def test_import_request_errors(api_client_for, model_files):
    client = api_client_for("ana")
    mismatch = post_import(client, [model_files["full_sentiment"]], tasks='["a", "b"]')
    assert mismatch.status_code == 400 and "one per file" in mismatch.json()["error"]["message"]
    assert ModelImport.objects.count() == 0


def test_import_models_command_prints_the_report(model_files, tmp_path, capsys):
    folder = tmp_path / "models"
    folder.mkdir()
    for key in ("full_sentiment", "full_box"):
        (folder / model_files[key].name).write_bytes(model_files[key].read_bytes())
    call_command(
        "import_models", str(folder), "--team", "vision", "--backbone-name", "shared", "--feature-layer", "features"
    )
    out = capsys.readouterr().out
    assert "sentiment.keras" in out and "box.keras" in out and "Imported 2 heads" in out
    assert HeadVersion.objects.filter(status="draft").count() == 2
