"""Exports with a real worker, through the HTTP API: import full models, assemble, export to ONNX, read the
report, download the file and run it with ONNX Runtime in the test against the SavedModel AND the original
Keras full models; the same request answers the existing export; the trial predict switches from
TensorFlow to ONNX Runtime with the same answer. The CLI's `modelhub export` against a live server:
tests/client/test_exports_cli.py."""

import hashlib
import io
import zipfile

import numpy as np
import pytest

from tests.conftest import wait_until
from tests.registry_helpers import import_and_approve, wait_status

pytestmark = pytest.mark.django_db(transaction=True)

# task_id order of the seed assembly (tasks sorted by slug) and the full model each head came from.
TASKS = [("box", "full_box"), ("sentiment", "full_sentiment"), ("topic", "full_topic")]
EXPORT_PENDING = ("queued", "exporting")
ASSEMBLY_PENDING = ("queued", "building", "verifying")


def ready_assembly(author, reviewer, model_files) -> dict:
    imported = import_and_approve(author, reviewer, model_files)
    created = author.post("/api/assemblies/", {"team": "vision", "backbone": imported["backbone"]}, format="json")
    assert created.status_code == 202, created.json()
    body = wait_status(author, f"/api/assemblies/{created.json()['id']}/", pending=ASSEMBLY_PENDING, timeout=300)
    assert body["status"] == "ready", body
    assert [t["task"] for t in body["tasks"]] == [task for task, _ in TASKS]
    return body


def _saved_model_outputs(author, assembly_id: int, tmp_path, x: np.ndarray, task_ids: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    archive = author.get(f"/api/assemblies/{assembly_id}/download/")
    zipfile.ZipFile(io.BytesIO(b"".join(archive.streaming_content))).extractall(tmp_path / "saved")
    model = tf.saved_model.load(str(tmp_path / "saved" / "model"))
    result = model.signatures["serving_default"](inputs=tf.constant(x), task_id=tf.constant(task_ids))
    return result["outputs"].numpy()


def _predict(author, assembly_id: int, task: str, rows: np.ndarray) -> dict:
    response = author.post(
        f"/api/assemblies/{assembly_id}/predict/", {"task": task, "inputs": rows.tolist(), "wait": 30}, format="json"
    )
    assert response.status_code == 200, response.json()
    return response.json()


def test_onnx_export_end_to_end(api_client_for, model_files, celery_worker, tmp_path):
    import keras
    import onnxruntime

    author = api_client_for("alice")
    reviewer = api_client_for("rita", role="reviewer")
    assembly = ready_assembly(author, reviewer, model_files)
    rng = np.random.default_rng(23)
    x = rng.normal(size=(9, 8)).astype(np.float32)
    task_ids = np.array([0, 1, 2, 2, 1, 0, 1, 2, 0], np.int32)  # every task, mixed
    before = _predict(author, assembly["id"], "topic", x[:3])
    assert before["runtime"] == "tensorflow"

    url = f"/api/assemblies/{assembly['id']}/exports/"
    created = author.post(url, {"format": "onnx"}, format="json")
    assert created.status_code == 202, created.json()
    export = wait_status(author, f"{url}{created.json()['id']}/", pending=EXPORT_PENDING, timeout=300)
    assert export["status"] == "ready", export
    assert export["progress"] == {"fraction": 1.0, "message": "verified"} and export["attempts"] == 1
    report = export["report"]
    assert (report["format"], report["quantization"], report["passed"]) == ("onnx", "none", True)
    assert [t["task"] for t in report["tasks"]] == [task for task, _ in TASKS]
    assert all(t["max_abs_diff"] <= 1e-5 and t["argmax_agreement"] == 1.0 for t in report["tasks"])
    listed = author.get(url).json()
    assert [e["id"] for e in listed["results"]] == [export["id"]]

    download = author.get(export["download_url"])
    assert download.status_code == 200
    data = b"".join(download.streaming_content)
    assert len(data) == export["size_bytes"] and hashlib.sha256(data).hexdigest() == export["sha256"]
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs() if i.name != "task_id"]
    assert len(names) == 1
    onnx_outputs, onnx_widths = session.run(["outputs", "output_width"], {names[0]: x, "task_id": task_ids})

    saved = _saved_model_outputs(author, assembly["id"], tmp_path, x, task_ids)
    np.testing.assert_allclose(onnx_outputs, saved, rtol=0, atol=1e-5)
    # Independently: each row through the original full Keras model of its task, zero-padded.
    originals = [keras.models.load_model(model_files[key]) for _, key in TASKS]
    widths = [t["output_width"] for t in assembly["tasks"]]
    assert onnx_widths.reshape(-1).tolist() == [widths[t] for t in task_ids]
    for row, task_id in enumerate(task_ids):
        expected = originals[task_id].predict(x[row : row + 1], verbose=0)[0]
        np.testing.assert_allclose(onnx_outputs[row, : widths[task_id]], expected, rtol=0, atol=1e-5)
        assert not onnx_outputs[row, widths[task_id] :].any()

    again = author.post(url, {"format": "onnx", "quantization": "none"}, format="json")
    assert (again.status_code, again.json()["id"], again.json()["existing"]) == (200, export["id"], True)

    # export.ready reaches the deployment bundle: the worker adds the export to the Triton repository.
    from assemblies.models import Assembly
    from bundles.work import bundle_root

    row = Assembly.objects.select_related("team", "backbone").get(pk=assembly["id"])
    triton = bundle_root() / "triton" / f"{row.team.slug}.{row.backbone.name}"
    wait_until(
        lambda: (triton / "config.pbtxt").exists() and (triton / str(row.pk) / "model.onnx").exists(),
        timeout=120,
        message="the Triton repository to hold the export",
    )
    assert hashlib.sha256((triton / str(row.pk) / "model.onnx").read_bytes()).hexdigest() == export["sha256"]

    after = _predict(author, assembly["id"], "topic", x[:3])
    assert after["runtime"] == "onnxruntime"
    np.testing.assert_allclose(np.array(after["outputs"]), np.array(before["outputs"]), rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.array(after["outputs"]), originals[2].predict(x[:3], verbose=0), rtol=0, atol=1e-5)
    polled = author.get(f"/api/assemblies/{assembly['id']}/predictions/{after['prediction']}/").json()
    assert polled["runtime"] == "onnxruntime"


def test_litert_dynamic_int8_export_reports_agreement_on_a_named_dataset(
    api_client_for, model_files, celery_worker, tmp_path
):
    """A dataset named in the request (read through training's reader in core): the report gives every task's
    argmax agreement on its validation rows, and the accuracy for the task whose head was trained on it. Both are
    recomputed here from the downloaded .tflite in the LiteRT interpreter and the original Keras full models."""
    import keras

    from heads.models import HeadVersion
    from modelhub.ml.export.litert import LiteRunner
    from tests import model_factory as mf
    from tests.training.helpers import ready_dataset

    author = api_client_for("alice")
    reviewer = api_client_for("rita", role="reviewer")
    assembly = ready_assembly(author, reviewer, model_files)
    npz = mf.make_classification_npz(tmp_path / "data.npz", num_rows=80, rule_seed=4)
    dataset = ready_dataset(author, npz, name="holdout")
    # The sentiment head counts as trained on this dataset (its lineage), so its task also gets the accuracy.
    HeadVersion.objects.filter(task__slug="sentiment", task__team__slug="vision").update(dataset_id=dataset["id"])

    url = f"/api/assemblies/{assembly['id']}/exports/"
    created = author.post(
        url, {"format": "litert", "quantization": "dynamic_int8", "dataset": dataset["id"]}, format="json"
    )
    assert created.status_code == 202, created.json()
    export = wait_status(author, f"{url}{created.json()['id']}/", pending=EXPORT_PENDING, timeout=300)
    assert export["status"] == "ready", export
    assert export["dataset"] == dataset["id"]
    report = export["report"]["dataset"]
    assert (report["id"], report["name"], report["split"], report["rows"], report["split_rows"]) == (
        dataset["id"], "holdout", "validation", 20, 20,
    )  # fmt: skip
    assert [t["task"] for t in report["tasks"]] == [task for task, _ in TASKS]

    data = b"".join(author.get(export["download_url"]).streaming_content)
    (tmp_path / "model.tflite").write_bytes(data)
    runner = LiteRunner(tmp_path / "model.tflite", num_tasks=len(TASKS), input_names=["inputs"])
    arrays = np.load(npz)
    x_val, y_val = arrays["x_val"], arrays["y_val"]
    widths = [t["output_width"] for t in assembly["tasks"]]
    for task_id, ((task, key), entry) in enumerate(zip(TASKS, report["tasks"], strict=True)):
        keras_out = keras.models.load_model(model_files[key]).predict(x_val, verbose=0)
        lite_out = runner.run({"inputs": x_val}, np.full(len(x_val), task_id, np.int32))[0][:, : widths[task_id]]
        agreement = float(np.mean(np.argmax(keras_out, 1) == np.argmax(lite_out, 1)))
        assert entry["rows"] == 20 and entry["argmax_agreement"] == pytest.approx(agreement), (task, entry)
        assert entry["max_abs_diff"] == pytest.approx(float(np.max(np.abs(keras_out - lite_out))), abs=1e-4)
        if task == "sentiment":
            assert entry["accuracy_saved_model"] == pytest.approx(float(np.mean(np.argmax(keras_out, 1) == y_val)))
            assert entry["accuracy_export"] == pytest.approx(float(np.mean(np.argmax(lite_out, 1) == y_val)))
        else:
            assert "accuracy_export" not in entry
