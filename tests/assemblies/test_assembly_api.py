"""The seed scenario through the HTTP API with a real worker: import K full models that share a
backbone, approve their heads, assemble, download, and check the SavedModel in a fresh process
that imports only TensorFlow against the ORIGINAL full models' outputs."""

import contextlib
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.registry_helpers import import_and_approve, wait_status

pytestmark = pytest.mark.django_db(transaction=True)

FRESH_PROCESS = """
import json, sys
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
x = np.load(sys.argv[2])
out = {}
manifest = json.load(open(sys.argv[1] + "/assets/manifest.json"))
for entry in manifest["heads"]:
    tid = entry["task_id"]
    res = model.signatures["serving_default"](inputs=tf.constant(x), task_id=tf.fill([x.shape[0]], tid))
    by_task = model.signatures["serving_by_task"](inputs=tf.constant(x), task=tf.fill([x.shape[0]], entry["task"]))
    out[entry["task"]] = {
        "outputs": res["outputs"].numpy().tolist(), "width": res["output_width"].numpy().tolist(),
        "by_task": by_task["outputs"].numpy().tolist(),
    }
try:
    model.signatures["serving_default"](inputs=tf.constant(x[:1]), task_id=tf.constant([99], tf.int32))
    out["bad_task_id"] = "no error"
except Exception as exc:
    out["bad_task_id"] = type(exc).__name__
try:
    model.signatures["serving_by_task"](inputs=tf.constant(x[:2]), task=tf.constant(["topic", "no-such-task"]))
    out["bad_task"] = "no error"
except tf.errors.InvalidArgumentError as exc:
    out["bad_task"] = exc.message
out["signatures"] = sorted(model.signatures)
out["modules"] = sorted(m for m in ("django", "modelhub", "heads") if m in sys.modules)
print(json.dumps(out))
"""


def _saved_model_cli(model_dir, signature: str, inputs: str) -> subprocess.CompletedProcess:
    cli = Path(sys.executable).parent / "saved_model_cli"
    command = [str(cli), "run", "--dir", str(model_dir), "--tag_set", "serve", "--signature_def", signature]
    return subprocess.run([*command, "--inputs", inputs], capture_output=True, text=True, timeout=180)


def test_seed_scenario_end_to_end(api_client_for, model_files, celery_worker, tmp_path):
    import keras

    author = api_client_for("alice")
    reviewer = api_client_for("rita", role="reviewer")
    imported = import_and_approve(author, reviewer, model_files)
    response = author.post("/api/assemblies/", {"team": "vision", "backbone": imported["backbone"]}, format="json")
    assert response.status_code == 202, response.json()
    assembly = wait_status(
        author, f"/api/assemblies/{response.json()['id']}/", pending=("queued", "building", "verifying"), timeout=240
    )
    assert assembly["status"] == "ready", assembly
    assert [(t["task_id"], t["task"], t["output_width"]) for t in assembly["tasks"]] == [
        (0, "box", 4),
        (1, "sentiment", 3),
        (2, "topic", 5),
    ]
    assert all(h["max_abs_diff"] <= 1e-5 for h in assembly["verification"]["heads"])
    assert assembly["signatures"] == ["serving_default", "serving_by_task"]
    assert assembly["task_signatures"] is False and assembly["manifest"]["serving"]["per_head_signatures"] is False

    again = author.post("/api/assemblies/", {"team": "vision", "backbone": imported["backbone"]}, format="json")
    assert (again.status_code, again.json()["id"], again.json()["existing"]) == (200, assembly["id"], True)

    download = author.get(f"/api/assemblies/{assembly['id']}/download/")
    data = b"".join(download.streaming_content)
    assert download["ETag"] == f'"{assembly["sha256"]}"'
    zipfile.ZipFile(io.BytesIO(data)).extractall(tmp_path)
    model_dir = tmp_path / "model"
    assert (model_dir / "saved_model.pb").exists() and (model_dir / "assets" / "manifest.json").exists()

    x = np.random.default_rng(3).standard_normal((5, 8)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(model_dir), str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = json.loads(result.stdout.strip().splitlines()[-1])
    assert outputs["modules"] == [] and outputs["bad_task_id"] != "no error"
    assert "unknown task slug" in outputs["bad_task"] and "no-such-task" in outputs["bad_task"]
    assert outputs["signatures"] == ["serving_by_task", "serving_default"]
    files = {"sentiment": "full_sentiment", "topic": "full_topic", "box": "full_box"}
    max_width = 5
    for task, key in files.items():
        expected = np.asarray(keras.saving.load_model(model_files[key], safe_mode=True)(x))
        width = expected.shape[1]
        got = np.asarray(outputs[task]["outputs"])
        assert got.shape == (5, max_width)
        np.testing.assert_allclose(got[:, :width], expected, atol=1e-5)
        assert np.all(got[:, width:] == 0)
        assert outputs[task]["width"] == [width] * 5
        np.testing.assert_array_equal(np.asarray(outputs[task]["by_task"]), got)

    predicted = author.post(
        f"/api/assemblies/{assembly['id']}/predict/", {"task": "topic", "inputs": x[:2].tolist()}, format="json"
    )
    assert predicted.status_code == 200, predicted.json()
    topic = np.asarray(keras.saving.load_model(model_files["full_topic"], safe_mode=True)(x[:2]))
    np.testing.assert_allclose(np.asarray(predicted.json()["outputs"]), topic, atol=1e-5)
    single = author.post(
        f"/api/assemblies/{assembly['id']}/predict/", {"task_id": 0, "inputs": x[0].tolist()}, format="json"
    ).json()
    assert single["task"] == "box" and np.asarray(single["outputs"]).shape == (1, 4)
    bad_shape = author.post(
        f"/api/assemblies/{assembly['id']}/predict/", {"task": "topic", "inputs": [[1, 2]]}, format="json"
    )
    assert bad_shape.status_code == 400 and "expected one example of shape [8]" in bad_shape.json()["error"]["message"]
    bad_task = author.post(
        f"/api/assemblies/{assembly['id']}/predict/", {"task_id": 7, "inputs": x[0].tolist()}, format="json"
    )
    assert bad_task.status_code == 400 and "Valid tasks: 0=box" in bad_task.json()["error"]["message"]

    npz = tmp_path / "in.npz"
    np.savez(npz, inputs=x, task_id=np.array([0, 1, 2, 1, 0], dtype=np.int32))
    cli = _saved_model_cli(model_dir, "serving_default", f"inputs={npz}[inputs];task_id={npz}[task_id]")
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert "output_width" in cli.stdout
    np.savez(npz, inputs=x[:2], task=np.array([b"topic", b"nope"]))
    unknown = _saved_model_cli(model_dir, "serving_by_task", f"inputs={npz}[inputs];task={npz}[task]")
    assert unknown.returncode != 0 and "unknown task slug" in unknown.stderr and "nope" in unknown.stderr

    # Per-task signatures on request: another assembly of the same heads, with one signature per task.
    with_signatures = author.post(
        "/api/assemblies/",
        {"team": "vision", "backbone": imported["backbone"], "task_signatures": True},
        format="json",
    )
    assert with_signatures.status_code == 202 and with_signatures.json()["id"] != assembly["id"]
    built = wait_status(
        author, f"/api/assemblies/{with_signatures.json()['id']}/", pending=("queued", "building", "verifying")
    )
    assert built["status"] == "ready", built
    assert built["signatures"] == ["serving_default", "serving_by_task", "box", "sentiment", "topic"]
    assert built["manifest"]["serving"]["per_head_signatures"] is True
    assert "3 per-task signatures" in built["verification"]["checked"]


def test_only_approved_heads_on_that_backbone_are_accepted(api_client_for, model_files, celery_worker):
    author = api_client_for("alice")
    with contextlib.ExitStack() as stack:
        handles = [stack.enter_context(open(model_files["full_sentiment"], "rb"))]
        response = author.post(
            "/api/imports/",
            {"team": "vision", "backbone_name": "shared", "feature_layer": "features", "files": handles},
            format="multipart",
        )
    body = wait_status(author, f"/api/imports/{response.json()['id']}/", timeout=120)
    head_id = body["report"][0]["head_version"]
    draft = author.post(
        "/api/assemblies/", {"team": "vision", "backbone": body["backbone"], "heads": [head_id, 999999]}, format="json"
    )
    assert draft.status_code == 400
    message = draft.json()["error"]["message"]
    assert f"{head_id} is 'draft'" in message and "999999 not found" in message
    none_approved = author.post("/api/assemblies/", {"team": "vision", "backbone": body["backbone"]}, format="json")
    assert none_approved.status_code == 400 and "no approved heads" in none_approved.json()["error"]["message"]
    outsider = api_client_for("mallory", team="audio")
    foreign = outsider.post("/api/assemblies/", {"team": "audio", "backbone": body["backbone"]}, format="json")
    assert foreign.status_code == 404


def test_predict_with_two_named_inputs_end_to_end(api_client_for, celery_worker, tmp_path):
    """A real two-input backbone (token_ids int32 [12], numeric float32 [5]): predict by input name."""
    from assemblies.models import Prediction
    from tests import real_models

    family = real_models.two_inputs(num_models=2)
    author = api_client_for("alice")
    reviewer = api_client_for("rita", role="reviewer")
    imported = import_and_approve(
        author,
        reviewer,
        paths=family.save(tmp_path / "models"),
        backbone_name="two",
        feature_layer=family.feature_layer,
    )
    response = author.post("/api/assemblies/", {"team": "vision", "backbone": imported["backbone"]}, format="json")
    assembly = wait_status(
        author, f"/api/assemblies/{response.json()['id']}/", pending=("queued", "building", "verifying"), timeout=300
    )
    assert assembly["status"] == "ready", assembly
    backbone_inputs = {entry["name"]: entry for entry in assembly["manifest"]["backbone"]["inputs"]}
    assert backbone_inputs == {
        "token_ids": {"name": "token_ids", "shape": [None, 12], "dtype": "int32"},
        "numeric": {"name": "numeric", "shape": [None, 5], "dtype": "float32"},
    }

    inputs = family.sample_inputs(3, 7)
    task = family.tasks[1]
    url = f"/api/assemblies/{assembly['id']}/predict/"
    body = {"task": task, "inputs": {name: value.tolist() for name, value in inputs.items()}}
    predicted = author.post(url, body, format="json")
    assert predicted.status_code == 200, predicted.json()
    expected = family.predict(1, inputs)
    tolerance = 1e-5 * max(1.0, float(np.max(np.abs(expected))))  # the verification's scaled tolerance
    np.testing.assert_allclose(np.asarray(predicted.json()["outputs"]), expected, rtol=0, atol=tolerance)
    one = {name: value[0].tolist() for name, value in inputs.items()}  # one example, no batch axis
    single = author.post(url, {"task": task, "inputs": one}, format="json")
    assert single.status_code == 200, single.json()
    np.testing.assert_allclose(np.asarray(single.json()["outputs"]), expected[:1], rtol=0, atol=tolerance)
    stored = Prediction.objects.filter(assembly_id=assembly["id"]).order_by("pk").first()
    assert stored.inputs == body["inputs"]

    missing = author.post(url, {"task": task, "inputs": {"token_ids": one["token_ids"]}}, format="json")
    assert missing.status_code == 400 and "'inputs' is missing 'numeric'" in missing.json()["error"]["message"]
