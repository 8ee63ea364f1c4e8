"""TensorFlow Serving's REST shape on the trial path (inference.tfserving_apis).

Web side: bodies that are valid TF Serving bodies (row and columnar format, both signatures,
``{"b64": ...}``), the answers' shapes (``predictions`` vs ``outputs``), status and metadata, and
``{"error": "..."}`` errors, with a stand-in worker. Marked slow: plain HTTP (requests) against
gunicorn and a worker, outputs checked against the Keras models, and the metadata checked
against the signature defs of the SavedModel the assembly downloads as.
"""

import base64
import io
import json
import zipfile

import numpy as np
import pytest
import requests

from assemblies.models import Assembly
from heads.models import HeadVersion
from tests.assemblies.manifests import TEXT_INPUT, fake_worker, with_inputs
from tests.view_helpers import assembly_row, backbone_row, head_row

APPROVED = HeadVersion.Status.APPROVED
ROW = [0.5] * 8


@pytest.fixture
def author(api_client_for):
    return api_client_for("alice")


@pytest.fixture
def assembly(author, monkeypatch):
    """A ready assembly of model 'vision.tiny': sentiment (3 wide, task 0) and topic (5 wide, task 1)."""
    fake_worker(monkeypatch)
    backbone = backbone_row(author.user)
    sentiment = head_row(author.user, backbone, task="sentiment", status=APPROVED)
    topic = head_row(author.user, backbone, task="topic", status=APPROVED, output_width=5)
    return assembly_row(author.user, backbone, [sentiment, topic], task_signatures=True)


def predict(client, body, suffix=""):
    return client.post(f"/v1/models/vision.tiny{suffix}:predict", body, format="json")


@pytest.mark.django_db
def test_row_format_answers_predictions_one_object_per_row(author, assembly):
    body = {"instances": [{"inputs": ROW, "task_id": 1}, {"inputs": ROW, "task_id": 0}]}
    response = predict(author, body, f"/versions/{assembly.pk}")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "predictions": [
            {"output_width": 5, "outputs": [0.25] * 5},
            {"output_width": 3, "outputs": [0.25] * 3 + [0.0, 0.0]},
        ]
    }


@pytest.mark.django_db
def test_columnar_format_and_serving_by_task_answer_outputs_by_name(author, assembly):
    body = {"signature_name": "serving_by_task", "inputs": {"inputs": [ROW, ROW], "task": ["sentiment", "topic"]}}
    response = predict(author, body)
    assert response.status_code == 200, response.content
    assert response.json() == {"outputs": {"output_width": [3, 5], "outputs": [[0.25] * 3 + [0.0, 0.0], [0.25] * 5]}}
    # A per-task signature has one output: its name is left out, as TF Serving does.
    single = predict(author, {"signature_name": "topic", "instances": [ROW]})
    assert single.status_code == 200 and single.json() == {"predictions": [[0.25] * 5]}


@pytest.mark.django_db
def test_b64_strings_are_decoded_for_text_inputs(author, assembly):
    with_inputs(assembly, TEXT_INPUT)
    text = {"b64": base64.b64encode(b"great movie").decode()}
    body = {"signature_name": "serving_by_task", "instances": [{"inputs": [text], "task": {"b64": "dG9waWM="}}]}
    response = predict(author, body)
    assert response.status_code == 200, response.content
    assert response.json()["predictions"][0]["output_width"] == 5


@pytest.mark.django_db
def test_labels_status_and_metadata(author, assembly):
    Assembly.objects.filter(pk=assembly.pk).update(resolved_from={"alias": "champion", "heads": {}})
    status = author.get("/v1/models/vision.tiny/labels/champion")
    assert status.status_code == 200
    ok = {"error_code": "OK", "error_message": ""}
    assert status.json() == {
        "model_version_status": [{"version": str(assembly.pk), "state": "AVAILABLE", "status": ok}]
    }
    assert author.get("/v1/models/vision.tiny").json() == status.json()
    assert predict(author, {"instances": [{"inputs": ROW, "task_id": 0}]}, "/labels/champion").status_code == 200

    metadata = author.get(f"/v1/models/vision.tiny/versions/{assembly.pk}/metadata")
    assert metadata.status_code == 200
    body = metadata.json()
    assert body["model_spec"] == {"name": "vision.tiny", "signature_name": "", "version": str(assembly.pk)}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) == {"serving_default", "serving_by_task", "sentiment", "topic", "__saved_model_init_op"}
    default = signatures["serving_default"]
    assert default["inputs"]["task_id"] == {
        "dtype": "DT_INT32",
        "tensor_shape": {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False},
        "name": "serving_default_task_id:0",
    }
    assert default["outputs"]["outputs"]["tensor_shape"]["dim"] == [
        {"size": "-1", "name": ""},
        {"size": "5", "name": ""},
    ]
    assert default["method_name"] == "tensorflow/serving/predict"


@pytest.mark.django_db
def test_errors_are_tf_serving_errors(author, assembly, api_client_for, client):
    def error(response, status):
        assert response.status_code == status, response.content
        assert set(response.json()) == {"error"}
        return response.json()["error"]

    assert "not found" in error(author.get("/v1/models/vision.nothing"), 404)
    assert "not found" in error(author.get("/v1/models/vision.tiny/labels/stable"), 404)
    assert "not found" in error(predict(author, {"instances": [ROW]}, "/versions/99999"), 404)
    error(api_client_for("olga", team="other").get("/v1/models/vision.tiny"), 404)
    error(client.get("/v1/models/vision.tiny"), 401)
    assert 'signature name: "nope" not found' in error(
        predict(author, {"signature_name": "nope", "instances": [ROW]}), 400
    )
    assert "exactly one" in error(predict(author, {"instances": [], "inputs": {}}), 400)
    assert "missing ['task_id']" in error(predict(author, {"instances": [{"inputs": ROW}]}), 400)
    assert "expected one example of shape [8]" in error(
        predict(author, {"instances": [{"inputs": ROW[:3], "task_id": 0}]}), 400
    )


# --- Live: plain HTTP against gunicorn + a worker, and the metadata of the real SavedModel ----------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_live_predict_equals_keras_and_metadata_equals_the_savedmodel(make_member, model_files, tmp_path):
    import keras
    from google.protobuf.json_format import MessageToDict
    from tensorflow.python.tools import saved_model_utils

    from tests.api.live_app import LiveClient, flush_redis, isolated_env, live_server, live_worker
    from tests.registry_helpers import import_and_approve, wait_status

    env = isolated_env(MODELHUB_PREDICT_MAX_WAIT="120")
    flush_redis(env["CELERY_BROKER_URL"])
    _, author_token = make_member("alice")
    _, reviewer_token = make_member("rita", role="reviewer")
    x = np.random.default_rng(4).standard_normal((4, 8)).astype("float32")
    with live_worker(env, tmp_path / "worker.log"), live_server(env, tmp_path / "gunicorn.log") as url:
        author, reviewer = LiveClient(url, author_token), LiveClient(url, reviewer_token)
        imported = import_and_approve(author, reviewer, model_files)
        created = author.post("/api/assemblies/", {"team": "vision", "backbone": imported["backbone"]}, format="json")
        assembly = wait_status(
            author, f"/api/assemblies/{created.json()['id']}/", pending=("queued", "building", "verifying"), timeout=240
        )
        assert assembly["status"] == "ready", assembly
        headers = {"Authorization": f"Token {author_token}"}
        tasks = [entry["task"] for entry in assembly["tasks"]]
        body = {
            "signature_name": "serving_by_task",
            "instances": [{"inputs": r, "task": tasks[i % 3]} for i, r in enumerate(x.tolist())],
        }
        answer = requests.post(f"{url}/v1/models/vision.shared:predict", json=body, headers=headers, timeout=300)
        metadata = requests.get(f"{url}/v1/models/vision.shared/metadata", headers=headers, timeout=60).json()
        archive = author.get(f"/api/assemblies/{assembly['id']}/download/").content
    assert answer.status_code == 200, answer.text
    for row, prediction in enumerate(answer.json()["predictions"]):
        task = tasks[row % 3]
        expected = np.asarray(keras.saving.load_model(model_files[f"full_{task}"], safe_mode=True)(x[row : row + 1]))[0]
        np.testing.assert_allclose(prediction["outputs"][: prediction["output_width"]], expected, atol=1e-5)
        assert prediction["output_width"] == len(expected)

    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        zipped.extractall(tmp_path / "download")
    meta_graph = saved_model_utils.get_meta_graph_def(str(tmp_path / "download" / "model"), "serve")
    real = {
        key: MessageToDict(value, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
        for key, value in meta_graph.signature_def.items()
    }
    ours = metadata["metadata"]["signature_def"]["signature_def"]
    assert set(ours) == set(real)
    for signature, definition in real.items():
        for side in ("inputs", "outputs"):
            for name, info in definition[side].items():
                mine = ours[signature][side][name]
                assert (mine["dtype"], mine["tensor_shape"]) == (info["dtype"], info["tensor_shape"]), (signature, name)
                if side == "inputs":
                    assert mine["name"] == info["name"]
        assert ours[signature]["method_name"] == definition["method_name"]
    assert json.dumps(metadata)  # plain JSON
