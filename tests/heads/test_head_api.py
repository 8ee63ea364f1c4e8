"""Head versions through the HTTP API with a real worker: heads, full models, bad input."""

import numpy as np
import pytest

from artifacts.models import Blob
from heads.models import HeadVersion
from tests.registry_helpers import ready_backbone, settled_head, upload

pytestmark = pytest.mark.django_db(transaction=True)


def test_head_file_becomes_a_draft_with_width_and_labels(api_client_for, model_files, celery_worker):
    client = api_client_for("ana")
    backbone = ready_backbone(client, model_files["backbone"])
    head = settled_head(
        client,
        model_files["head"],
        backbone=backbone["id"],
        task="sentiment",
        labels='["neg", "neutral", "pos"]',
        description="# Sentiment\nThree classes.",
    )
    assert head["status"] == "draft", head
    assert (head["task"], head["version"], head["output_width"]) == ("sentiment", 1, 3)
    assert head["labels"] == ["neg", "neutral", "pos"]
    assert head["backbone"] == backbone["id"]
    second = settled_head(client, model_files["head"], backbone=backbone["id"], task="sentiment")
    assert second["version"] == 2


def test_full_model_upload_extracts_an_equivalent_head(api_client_for, model_files, celery_worker, tmp_path):
    import keras

    client = api_client_for("ana")
    backbone = ready_backbone(client, model_files["backbone"])
    head = settled_head(client, model_files["full_box"], backbone=backbone["id"], task="box")
    assert head["status"] == "draft", head
    assert head["output_width"] == 4
    stored = HeadVersion.objects.get(pk=head["id"])
    assert stored.source_blob is not None and stored.source_blob != stored.blob
    # Independent check: the downloaded head on the downloaded backbone equals the full model.
    for name, url in (
        ("head", f"/api/heads/{head['id']}/download/"),
        ("bb", f"/api/backbones/{backbone['id']}/download/"),
    ):
        (tmp_path / f"{name}.keras").write_bytes(b"".join(client.get(url).streaming_content))
    head_model = keras.saving.load_model(tmp_path / "head.keras", safe_mode=True)
    backbone_model = keras.saving.load_model(tmp_path / "bb.keras", safe_mode=True)
    full = keras.saving.load_model(model_files["full_box"], safe_mode=True)
    x = np.random.default_rng(7).standard_normal((16, 8)).astype("float32")
    np.testing.assert_allclose(head_model(backbone_model(x)), full(x), atol=1e-6)


@pytest.mark.parametrize(
    "key, fields, expected",
    [
        ("head_wrong_shape", {}, "[7]"),
        ("full_perturbed", {}, "hidden"),
        ("head", {"labels": '["a", "b"]'}, "labels has 2 entries but the head outputs 3"),
    ],
)
def test_incompatible_heads_are_rejected_with_the_reason(
    api_client_for, model_files, celery_worker, key, fields, expected
):
    client = api_client_for("ana")
    backbone = ready_backbone(client, model_files["backbone"])
    head = settled_head(client, model_files[key], backbone=backbone["id"], task="t1", **fields)
    assert head["status"] == "rejected"
    assert expected in head["error"]
    if key == "head_wrong_shape":
        assert "[6]" in head["error"]  # both shapes named


def test_a_keras_hub_task_file_uploaded_as_a_head_says_to_import_it(
    api_client_for, model_files, celery_worker, tmp_path
):
    from tests.heads.test_task_and_variable_length_import import bert_tasks

    _, paths = bert_tasks(tmp_path, widths=(2,))
    client = api_client_for("ana")
    backbone = ready_backbone(client, model_files["backbone"])
    head = settled_head(client, paths[0], backbone=backbone["id"], task="intent")
    assert head["status"] == "rejected", head
    error = head["error"]
    assert "'intent0.keras' is a keras-hub task (keras_hub>BertTextClassifier" in error, error
    assert "POST /api/imports/" in error and "feature_layer" in error and "'bert_backbone'" in error, error


def test_bad_requests_get_400_or_404_and_store_nothing(api_client_for, model_files, celery_worker):
    client = api_client_for("ana")
    backbone = ready_backbone(client, model_files["backbone"])
    blobs_before = Blob.objects.count()
    bad_slug = upload(client, "/api/heads/", model_files["head"], backbone=backbone["id"], task="Bad Slug!")
    assert bad_slug.status_code == 400 and "Invalid task slug" in bad_slug.json()["error"]["message"]
    bad_labels = upload(client, "/api/heads/", model_files["head"], backbone=backbone["id"], task="ok", labels="nope")
    assert bad_labels.status_code == 400 and "JSON list" in bad_labels.json()["error"]["message"]
    outsider = api_client_for("mallory", team="audio")
    foreign = upload(outsider, "/api/heads/", model_files["head"], backbone=backbone["id"], task="ok")
    assert foreign.status_code == 404
    assert Blob.objects.count() == blobs_before
    assert HeadVersion.objects.count() == 0
