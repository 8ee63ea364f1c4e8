"""Open Inference Protocol v2 on the trial path (inference.oip_apis).

Web side first: a stand-in worker answers 0.25 per output (tests.assemblies.manifests), so the
shapes, padding, names, versions, binary tensors and errors are checked without TensorFlow.
Then, marked slow, the real thing: an unmodified ``tritonclient.http`` from .venv-clients reads
the metadata and runs ``infer`` against gunicorn and a worker, and the outputs equal the
original Keras models' (computed here, independently of the SavedModel).
"""

import json
import struct
import subprocess

import numpy as np
import pytest

from assemblies.models import Assembly, Prediction
from heads.models import HeadVersion
from tests.assemblies.manifests import fake_worker
from tests.conftest import REPO_ROOT
from tests.view_helpers import assembly_row, backbone_row, head_row

APPROVED = HeadVersion.Status.APPROVED
ROW = [0.5] * 8


@pytest.fixture
def author(api_client_for):
    return api_client_for("alice")


@pytest.fixture
def model(author):
    """Model 'vision.tiny': an assembly of sentiment (3 wide) + topic (5 wide), and one of topic alone (newer)."""
    backbone = backbone_row(author.user)
    sentiment = head_row(author.user, backbone, task="sentiment", status=APPROVED, labels=["neg", "neu", "pos"])
    topic = head_row(author.user, backbone, task="topic", status=APPROVED, output_width=5)
    both = assembly_row(author.user, backbone, [sentiment, topic])
    alone = assembly_row(author.user, backbone, [topic])
    return {"both": both, "alone": alone, "backbone": backbone}


def tensor(name, shape, datatype, data):
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def infer(client, body, *, name="vision.tiny", version=None):
    path = f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + "/infer"
    return client.post(path, json.dumps(body), content_type="application/json")


@pytest.mark.django_db
def test_health_and_server_metadata_need_no_token(client):
    live = client.get("/v2/health/live")
    assert live.status_code == 200 and live.content == b""
    assert client.get("/v2/health/ready").status_code in (200, 400)  # a worker may or may not answer here
    server = client.get("/v2")
    assert server.status_code == 200
    assert server.json() == {"name": "modelhub", "version": "1.0.0", "extensions": ["binary_tensor_data"]}


@pytest.mark.django_db
def test_metadata_names_backbone_inputs_task_id_and_the_two_outputs(author, model):
    both, alone = model["both"], model["alone"]
    metadata = author.get(f"/v2/models/vision.tiny/versions/{both.pk}")
    assert metadata.status_code == 200, metadata.content
    assert metadata.json() == {
        "name": "vision.tiny",
        "versions": [str(alone.pk), str(both.pk)],
        "platform": "tensorflow_savedmodel",
        "inputs": [
            {"name": "inputs", "datatype": "FP32", "shape": [-1, 8]},
            {"name": "task_id", "datatype": "INT32", "shape": [-1]},
        ],
        "outputs": [
            {"name": "outputs", "datatype": "FP32", "shape": [-1, 5]},
            {"name": "output_width", "datatype": "INT32", "shape": [-1]},
        ],
    }
    assert author.get(f"/v2/models/vision.tiny/versions/{both.pk}/ready").status_code == 200
    assert author.get("/v2/models/vision.tiny/ready").status_code == 200


@pytest.mark.django_db
def test_no_version_means_the_newest_champion_build_else_the_newest_ready(author, model, monkeypatch):
    fake_worker(monkeypatch)
    body = {"inputs": [tensor("inputs", [1, 8], "FP32", ROW), tensor("task", [1], "BYTES", ["topic"])]}
    assert infer(author, body).json()["model_version"] == str(model["alone"].pk)  # newest ready
    Assembly.objects.filter(pk=model["both"].pk).update(resolved_from={"alias": "champion", "heads": {}})
    assert infer(author, body).json()["model_version"] == str(model["both"].pk)  # built from champion


@pytest.mark.django_db
def test_infer_runs_a_task_per_row_and_pads_like_the_savedmodel(author, model, monkeypatch):
    fake_worker(monkeypatch)
    both = model["both"]
    body = {
        "id": "42",
        "inputs": [
            tensor("inputs", [3, 8], "FP32", ROW * 3),  # flattened, row-major
            tensor("task_id", [3], "INT32", [1, 0, 1]),
        ],
    }
    response = infer(author, body, version=both.pk)
    assert response.status_code == 200, response.content
    answer = response.json()
    assert (answer["model_name"], answer["model_version"], answer["id"]) == ("vision.tiny", str(both.pk), "42")
    outputs = {tensor["name"]: tensor for tensor in answer["outputs"]}
    assert outputs["outputs"]["shape"] == [3, 5] and outputs["outputs"]["datatype"] == "FP32"
    values = np.asarray(outputs["outputs"]["data"]).reshape(3, 5)
    np.testing.assert_array_equal(values[[0, 2]], 0.25)  # topic: 5 wide
    np.testing.assert_array_equal(values[1], [0.25, 0.25, 0.25, 0, 0])  # sentiment: 3 wide, zero beyond
    assert outputs["output_width"] == {"name": "output_width", "datatype": "INT32", "shape": [3], "data": [5, 3, 5]}
    # ONE trial prediction for the batch, carrying each row's task as serving_default takes it.
    (prediction,) = Prediction.objects.all()
    assert prediction.inputs["task_id"] == [1, 0, 1] and len(prediction.inputs["inputs"]) == 3


@pytest.mark.django_db
def test_binary_tensor_extension_in_and_out(author, model, monkeypatch):
    fake_worker(monkeypatch)
    x = np.full((2, 8), 0.5, np.float32)
    tasks = b"".join(struct.pack("<I", len(s)) + s for s in (b"topic", b"sentiment"))
    header = {
        "inputs": [
            {"name": "inputs", "shape": [2, 8], "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}},
            {"name": "task", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(tasks)}},
        ],
        "parameters": {"binary_data_output": True},
    }
    head = json.dumps(header).encode()
    response = author.post(
        f"/v2/models/vision.tiny/versions/{model['both'].pk}/infer",
        head + x.tobytes() + tasks,
        content_type="application/octet-stream",
        HTTP_INFERENCE_HEADER_CONTENT_LENGTH=str(len(head)),
    )
    assert response.status_code == 200, response.content
    length = int(response["Inference-Header-Content-Length"])
    document = json.loads(response.content[:length])
    raw = response.content[length:]
    sizes = [tensor["parameters"]["binary_data_size"] for tensor in document["outputs"]]
    assert [tensor["name"] for tensor in document["outputs"]] == ["outputs", "output_width"] and sizes == [40, 8]
    outputs = np.frombuffer(raw[:40], "<f4").reshape(2, 5)
    np.testing.assert_array_equal(outputs, [[0.25] * 5, [0.25] * 3 + [0, 0]])
    assert np.frombuffer(raw[40:], "<i4").tolist() == [5, 3]


@pytest.mark.django_db
def test_errors_are_the_protocols(author, model, api_client_for, client, settings, monkeypatch):
    both = model["both"]
    good = [tensor("inputs", [1, 8], "FP32", ROW), tensor("task_id", [1], "INT32", [0])]

    def error(response, status):
        assert response.status_code == status, response.content
        assert set(response.json()) == {"error"} and isinstance(response.json()["error"], str)
        return response.json()["error"]

    assert "not a ModelHub model name" in error(author.get("/v2/models/tiny"), 404)
    assert "was not found" in error(author.get("/v2/models/vision.nothing"), 404)
    assert "was not found" in error(author.get("/v2/models/vision.tiny/versions/999999"), 404)
    outsider = api_client_for("olga", team="other")
    error(outsider.get("/v2/models/vision.tiny"), 404)  # non-members: not found, never 403
    error(client.get("/v2/models/vision.tiny"), 401)
    message = error(infer(author, {"inputs": [tensor("inputs", [1, 8], "FP64", ROW), good[1]]}, version=both.pk), 400)
    assert "'inputs' is FP32; received FP64" in message
    message = error(infer(author, {"inputs": [good[0]]}, version=both.pk), 400)
    assert "task" in message
    message = error(infer(author, {"inputs": [good[0], tensor("task_id", [1], "INT32", [7])]}, version=both.pk), 400)
    assert "Unknown task_id(s) [7]" in message and "0=sentiment" in message
    message = error(infer(author, {"inputs": [tensor("inputs", [1, 8], "FP32", ROW[:5]), good[1]]}), 400)
    assert "8 elements" in message and "holds 5" in message
    error(author.post("/v2/models/vision.tiny/infer", b"{not json", content_type="application/json"), 400)
    building = assembly_row(author.user, model["backbone"], [both.entries.first().head], status="building")
    assert "'building', not ready" in error(author.get(f"/v2/models/vision.tiny/versions/{building.pk}/ready"), 400)
    assert not Prediction.objects.exists()  # nothing was queued by a rejected request

    # No worker answers within MODELHUB_PREDICT_MAX_WAIT: 503 with Retry-After, the prediction goes on.
    monkeypatch.setattr("assemblies.services.queue_on_commit", lambda *args: None)
    settings.MODELHUB_PREDICT_MAX_WAIT = 0
    response = infer(author, {"inputs": good}, version=both.pk)
    assert "MODELHUB_PREDICT_MAX_WAIT" in error(response, 503) and response["Retry-After"] == "5"
    assert Prediction.objects.get().status == Prediction.Status.QUEUED


# --- The real thing: tritonclient (unmodified) against gunicorn + a worker -------------------------

TRITON_SCRIPT = r"""
import json, sys
import numpy as np
import tritonclient.http as httpclient

url, token, name, version = sys.argv[1:5]
headers = {"Authorization": f"Token {token}"}
client = httpclient.InferenceServerClient(url=url)
assert client.is_server_live(), "not live"
metadata = client.get_model_metadata(name, headers=headers)
assert client.is_model_ready(name, version, headers=headers)
x = np.asarray(json.loads(sys.stdin.read()), dtype=np.float32)
results = {}
for binary in (False, True):
    inputs = [httpclient.InferInput("inputs", list(x.shape), "FP32"),
              httpclient.InferInput("task_id", [len(x)], "INT32")]
    inputs[0].set_data_from_numpy(x, binary_data=binary)
    inputs[1].set_data_from_numpy(np.arange(len(x), dtype=np.int32) % 3, binary_data=binary)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("outputs", "output_width")]
    result = client.infer(name, inputs, model_version=version, outputs=outputs, headers=headers)
    results[str(binary)] = {"outputs": result.as_numpy("outputs").tolist(),
                            "width": result.as_numpy("output_width").tolist(),
                            "version": result.get_response()["model_version"]}
try:
    client.get_model_metadata("vision.nothing", headers=headers)
    raise SystemExit("an unknown model did not raise")
except httpclient.InferenceServerException as exc:
    results["unknown"] = {"status": exc.status(), "message": exc.message()}
print(json.dumps({"metadata": metadata, "results": results}))
"""


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_tritonclient_reads_metadata_and_infers_like_the_keras_models(make_member, model_files, tmp_path):
    import keras

    from tests.api.live_app import LiveClient, flush_redis, isolated_env, live_server, live_worker
    from tests.registry_helpers import import_and_approve, wait_status

    env = isolated_env(MODELHUB_PREDICT_MAX_WAIT="120")
    flush_redis(env["CELERY_BROKER_URL"])
    _, author_token = make_member("alice")
    _, reviewer_token = make_member("rita", role="reviewer")
    _, token = make_member("tim", team="vision")
    x = np.random.default_rng(3).standard_normal((5, 8)).astype("float32")
    with live_worker(env, tmp_path / "worker.log"), live_server(env, tmp_path / "gunicorn.log") as url:
        author, reviewer = LiveClient(url, author_token), LiveClient(url, reviewer_token)
        imported = import_and_approve(author, reviewer, model_files)
        created = author.post("/api/assemblies/", {"team": "vision", "backbone": imported["backbone"]}, format="json")
        assembly = wait_status(
            author, f"/api/assemblies/{created.json()['id']}/", pending=("queued", "building", "verifying"), timeout=240
        )
        assert assembly["status"] == "ready", assembly
        run = subprocess.run(
            [str(REPO_ROOT / ".venv-clients/bin/python"), "-c", TRITON_SCRIPT, url.removeprefix("http://"), token,
             "vision.shared", str(assembly["id"])],
            input=json.dumps(x.tolist()), capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    answer = json.loads(run.stdout)
    assert [i["name"] for i in answer["metadata"]["inputs"]] == ["inputs", "task_id"]
    order = [entry["task"] for entry in assembly["tasks"]]  # task_id order
    widths = {entry["task"]: entry["output_width"] for entry in assembly["tasks"]}
    for binary in ("False", "True"):
        result = answer["results"][binary]
        assert result["version"] == str(assembly["id"])
        outputs = np.asarray(result["outputs"])
        assert outputs.shape == (5, max(widths.values()))
        for row in range(5):
            task = order[row % 3]
            full = keras.saving.load_model(model_files[f"full_{task}"], safe_mode=True)
            expected = np.asarray(full(x[row : row + 1]))[0]
            np.testing.assert_allclose(outputs[row, : widths[task]], expected, atol=1e-5)
            assert np.all(outputs[row, widths[task] :] == 0) and result["width"][row] == widths[task]
    assert (
        answer["results"]["unknown"]["status"] == "404" and "was not found" in answer["results"]["unknown"]["message"]
    )
