"""Backbone versions through the HTTP API with a real worker: upload, validate, dedupe, download."""

import hashlib

import pytest

from artifacts.models import Blob
from backbones.models import BackboneVersion
from tests.registry_helpers import upload, wait_status

pytestmark = pytest.mark.django_db(transaction=True)


def test_upload_validates_and_downloads_with_checksum(api_client_for, model_files, celery_worker):
    client = api_client_for("ana")
    response = upload(client, "/api/backbones/", model_files["backbone"], team="vision", name="tiny-mlp")
    assert response.status_code == 202, response.json()
    created = response.json()
    assert (created["status"], created["version"], created["deduplicated"]) == ("validating", 1, False)
    body = wait_status(client, f"/api/backbones/{created['id']}/")
    assert body["status"] == "ready", body
    spec = body["spec"]
    assert spec["inputs"][0]["shape"] == [8]
    assert spec["feature_shape"] == [6]
    assert [layer["name"] for layer in spec["layers"]] == ["inputs", "hidden", "features"]
    assert spec["params"]["total"] == 8 * 12 + 12 + 12 * 6 + 6
    data = model_files["backbone"].read_bytes()
    assert body["sha256"] == hashlib.sha256(data).hexdigest() and body["size_bytes"] == len(data)

    download = client.get(f"/api/backbones/{created['id']}/download/")
    content = b"".join(download.streaming_content)
    assert download.status_code == 200 and content == data
    assert download["ETag"] == f'"{body["sha256"]}"'
    assert download["Digest"].startswith("sha-256=")


def test_same_file_and_same_weights_are_deduplicated(api_client_for, model_files, celery_worker):
    client = api_client_for("ana")
    first = upload(client, "/api/backbones/", model_files["backbone"], team="vision", name="tiny").json()
    wait_status(client, f"/api/backbones/{first['id']}/")
    again = upload(client, "/api/backbones/", model_files["backbone"], team="vision", name="tiny")
    assert again.status_code == 200
    assert (again.json()["id"], again.json()["deduplicated"]) == (first["id"], True)
    assert Blob.objects.count() == 1

    resaved = upload(client, "/api/backbones/", model_files["backbone_resaved"], team="vision", name="tiny").json()
    assert resaved["version"] == 2 and resaved["sha256"] != first["sha256"]
    body = wait_status(client, f"/api/backbones/{resaved['id']}/")
    assert body["status"] == "deduplicated"
    assert body["duplicate_of"] == first["id"]
    assert body["weights_sha256"] == client.get(f"/api/backbones/{first['id']}/").json()["weights_sha256"]


def test_same_bytes_under_another_name_or_cut_is_never_silently_dropped(api_client_for, model_files, celery_worker):
    client = api_client_for("ana")
    first = upload(client, "/api/backbones/", model_files["backbone"], team="vision", name="tiny").json()
    first = wait_status(client, f"/api/backbones/{first['id']}/")
    renamed = upload(client, "/api/backbones/", model_files["backbone"], team="vision", name="other-name")
    assert renamed.status_code == 409
    assert f"id {first['id']}" in renamed.json()["error"]["message"]
    assert renamed.json()["error"]["detail"]["existing"] == first["id"]
    # Another cut of the same file is another backbone: a new version with its own identity.
    cut = upload(client, "/api/backbones/", model_files["backbone"], team="vision", name="tiny", feature_layer="hidden")
    assert cut.status_code == 202 and cut.json()["version"] == 2
    body = wait_status(client, f"/api/backbones/{cut.json()['id']}/")
    assert body["status"] == "ready", body
    assert body["weights_sha256"] != first["weights_sha256"]


def test_identity_covers_weight_free_layers_and_the_cut():
    import keras

    from modelhub.ml.inspect import weights_fingerprint

    def model(activation: str, pooling):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((8, 8, 3), name="image")
        x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
        x = keras.layers.Activation(activation, name="act")(x)
        return keras.Model(inputs, pooling(name="pool")(x))

    base = model("relu", keras.layers.GlobalAveragePooling2D)
    assert weights_fingerprint(base) == weights_fingerprint(model("relu", keras.layers.GlobalAveragePooling2D))
    assert weights_fingerprint(base) != weights_fingerprint(model("tanh", keras.layers.GlobalAveragePooling2D))
    assert weights_fingerprint(base) != weights_fingerprint(model("relu", keras.layers.GlobalMaxPooling2D))
    shorter = keras.Model(base.inputs, base.get_layer("act").output)  # the same weights, another cut
    assert weights_fingerprint(base) != weights_fingerprint(shorter)


@pytest.mark.parametrize(
    "key, message",
    [
        ("lambda", "Lambda"),
        ("corrupt", ""),
        ("bomb", "uncompressed"),
    ],
)
def test_bad_files_are_rejected_with_a_clear_error(api_client_for, model_files, celery_worker, key, message):
    client = api_client_for("ana")
    response = upload(client, "/api/backbones/", model_files[key], team="vision", name=f"bad-{key}")
    assert response.status_code == 202
    body = wait_status(client, f"/api/backbones/{response.json()['id']}/")
    assert body["status"] == "rejected"
    assert body["error"] and message in body["error"]


def test_wrong_extension_is_refused_and_nothing_is_stored(api_client_for, tmp_path):
    client = api_client_for("ana")
    path = tmp_path / "model.h5"
    path.write_bytes(b"HDF5 not really")
    response = upload(client, "/api/backbones/", path, team="vision", name="h5")
    assert response.status_code == 400
    assert "Expected a .keras file, received 'model.h5'" in response.json()["error"]["message"]
    assert BackboneVersion.objects.count() == 0 and Blob.objects.count() == 0


def test_other_teams_backbones_are_404(api_client_for, model_files):
    owner = api_client_for("ana", team="vision")
    created = upload(owner, "/api/backbones/", model_files["backbone"], team="vision", name="tiny").json()
    outsider = api_client_for("mallory", team="audio")
    for url in (f"/api/backbones/{created['id']}/", f"/api/backbones/{created['id']}/download/"):
        assert outsider.get(url).status_code == 404
    assert outsider.get("/api/backbones/").json()["count"] == 0
    response = upload(outsider, "/api/backbones/", model_files["backbone"], team="vision", name="x")
    assert response.status_code == 404
