"""Evaluate head versions on datasets and compare two versions, through the API with a real worker.

Every number the server reports is checked against an independent computation: the downloaded
backbone and head files run with Keras, the metrics and the weight changes done with NumPy.
"""

import numpy as np
import pytest
from drf_spectacular.generators import SchemaGenerator

from heads.models import HeadEvaluation
from tests import model_factory as mf
from tests.api.test_schema import validate
from tests.registry_helpers import assert_job_succeeded, settled_head
from tests.training.helpers import finished_job, post_job, ready_dataset, setup_backbone_and_data
from training.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


def _download(client, url: str, path):
    response = client.get(url)
    assert response.status_code == 200
    path.write_bytes(b"".join(response.streaming_content))
    return path


def _load(client, url: str, path):
    import keras

    return keras.models.load_model(_download(client, url, path), compile=False)


def _trained_head(client, backbone: int, dataset: int, *, seed: int, epochs: int, head=None) -> int:
    job = post_job(
        client, "train_head", backbone=backbone, dataset=dataset, task="quadrant",
        head=head or {"type": "dense"}, epochs=epochs, batch_size=16, learning_rate=0.05, seed=seed,
    )  # fmt: skip
    body = finished_job(client, job["id"])
    assert_job_succeeded(body)
    return body["result"]["head_versions"][0]


def _evaluate(client, head: int, dataset: int) -> dict:
    response = client.post(f"/api/heads/{head}/evaluate/", {"dataset": dataset}, format="json")
    assert response.status_code == 202, response.json()
    assert response.json()["kind"] == "evaluate_head"
    body = finished_job(client, response.json()["id"])
    assert_job_succeeded(body)
    return body


def test_evaluate_and_compare_end_to_end(api_client_for, model_files, celery_worker, tmp_path):
    client = api_client_for("ana")
    backbone, dataset = setup_backbone_and_data(client, model_files, tmp_path)
    first = _trained_head(client, backbone["id"], dataset["id"], seed=1, epochs=2)
    second = _trained_head(client, backbone["id"], dataset["id"], seed=2, epochs=4)
    uploaded = settled_head(client, model_files["head"], backbone=backbone["id"], task="quadrant")
    assert uploaded["status"] == "draft" and uploaded["metrics"] == {}

    data = np.load(tmp_path / "train.npz")
    x_val, y_val = data["x_val"], data["y_val"]
    backbone_model = _load(client, f"/api/backbones/{backbone['id']}/download/", tmp_path / "bb.keras")
    features = np.asarray(backbone_model(x_val, training=False))
    outputs, weights = {}, {}
    for head in (first, second, uploaded["id"]):
        job = _evaluate(client, head, dataset["id"])
        model = _load(client, f"/api/heads/{head}/download/", tmp_path / f"head-{head}.keras")
        probabilities = np.asarray(model(features, training=False), np.float64)
        outputs[head], weights[head] = probabilities, model.get_weights()
        expected_accuracy = float(np.mean(probabilities.argmax(axis=1) == y_val))
        expected_loss = float(-np.mean(np.log(np.clip(probabilities[np.arange(len(y_val)), y_val], 1e-7, 1))))
        metrics = job["result"]["metrics"]
        assert metrics["num_examples"] == len(y_val) == 60
        assert metrics["accuracy"] == pytest.approx(expected_accuracy, abs=1e-9)
        assert metrics["loss"] == pytest.approx(expected_loss, rel=1e-4)
        evaluation = HeadEvaluation.objects.get(pk=job["result"]["evaluation"])
        assert (evaluation.head_id, evaluation.dataset_id, evaluation.backbone_id, evaluation.job_id) == (
            head, dataset["id"], backbone["id"], job["id"],
        )  # fmt: skip
        assert (evaluation.split, evaluation.num_output_rows, evaluation.metrics) == ("validation", 60, metrics)

    body = client.get(f"/api/heads/compare/?a={first}&b={second}").json()
    schema = SchemaGenerator().get_schema(request=None, public=True)
    validate(
        schema,
        body,
        schema["paths"]["/api/heads/compare/"]["get"]["responses"]["200"]["content"]["application/json"]["schema"],
    )
    assert (body["a"]["id"], body["a"]["version"], body["b"]["id"], body["b"]["version"]) == (first, 1, second, 2)
    [row] = body["metrics"]
    assert (row["dataset"], row["split"], row["num_examples"]) == (dataset["id"], "validation", 60)
    assert row["a"]["metrics"]["accuracy"] == pytest.approx(np.mean(outputs[first].argmax(1) == y_val))
    assert row["b"]["metrics"]["accuracy"] == pytest.approx(np.mean(outputs[second].argmax(1) == y_val))
    assert row["delta"]["accuracy"] == pytest.approx(row["b"]["metrics"]["accuracy"] - row["a"]["metrics"]["accuracy"])

    compared = body["weights"]
    assert compared["same_architecture"] is True and compared["difference"] is None
    [layer] = compared["layers"]
    kernel_a, bias_a = weights[first]
    kernel_b, bias_b = weights[second]
    expected = np.sqrt(np.sum((kernel_b - kernel_a) ** 2.0) + np.sum((bias_b - bias_a) ** 2.0)) / np.sqrt(
        np.sum(kernel_a.astype(np.float64) ** 2) + np.sum(bias_a.astype(np.float64) ** 2)
    )
    assert layer["relative_l2_change"] == pytest.approx(expected, rel=1e-6)
    assert compared["relative_l2_change"] == pytest.approx(expected, rel=1e-6)
    by_name = {entry["name"].rsplit("/", 1)[-1]: entry for entry in layer["weights"]}
    assert by_name["0"]["shape"] == [6, 3]
    assert by_name["0"]["relative_l2_change"] == pytest.approx(
        np.linalg.norm(kernel_b - kernel_a) / np.linalg.norm(kernel_a), rel=1e-6
    )

    agreement = body["outputs"]
    assert (agreement["dataset"], agreement["num_rows"]) == (dataset["id"], 60)
    assert agreement["max_abs_diff"] == pytest.approx(np.max(np.abs(outputs[second] - outputs[first])), abs=1e-6)
    differs = np.mean(outputs[first].argmax(1) != outputs[second].argmax(1))
    assert agreement["top_class_differs_fraction"] == pytest.approx(differs)

    # An uploaded head (no training metrics) compares the same way once evaluated.
    body = client.get(f"/api/heads/compare/?a={first}&b={uploaded['id']}").json()
    assert body["metrics"][0]["b"]["metrics"]["accuracy"] == pytest.approx(
        np.mean(outputs[uploaded["id"]].argmax(1) == y_val)
    )
    assert body["weights"]["same_architecture"] is True

    # Another architecture: the difference is named, no per-layer numbers.
    mlp = _trained_head(client, backbone["id"], dataset["id"], seed=3, epochs=1, head={"type": "mlp", "hidden": [4]})
    body = client.get(f"/api/heads/compare/?a={first}&b={mlp}").json()
    assert body["weights"]["same_architecture"] is False
    assert body["weights"]["layers"] == [] and "layers" in body["weights"]["difference"]
    assert body["metrics"] == [] and body["outputs"] is None  # mlp was never evaluated


def test_evaluate_refuses_datasets_that_do_not_fit(api_client_for, model_files, celery_worker, tmp_path):
    client = api_client_for("ana")
    backbone, dataset = setup_backbone_and_data(client, model_files, tmp_path)
    head = settled_head(client, model_files["head"], backbone=backbone["id"], task="quadrant")["id"]
    wrong_shape = tmp_path / "wide.npz"
    np.savez(wrong_shape, x=np.zeros((20, 5), np.float32), y=np.zeros(20, np.int64))
    wide = ready_dataset(client, wrong_shape, "wide")
    many = ready_dataset(client, mf.make_classification_npz(tmp_path / "five.npz", num_classes=5), "five")
    jobs_before = Job.objects.count()

    response = client.post(f"/api/heads/{head}/evaluate/", {"dataset": wide["id"]}, format="json")
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "shape [5]" in message and "takes rows of shape [8]" in message
    response = client.post(f"/api/heads/{head}/evaluate/", {"dataset": many["id"]}, format="json")
    assert response.status_code == 400
    assert "5 classes" in response.json()["error"]["message"] and "3 outputs" in response.json()["error"]["message"]
    assert client.post(f"/api/heads/{head}/evaluate/", {}, format="json").status_code == 400
    assert Job.objects.count() == jobs_before and not HeadEvaluation.objects.exists()

    # Another team's head or dataset: 404 for the head, 400 naming the team for the dataset.
    other = api_client_for("olga", team="audio")
    assert other.post(f"/api/heads/{head}/evaluate/", {"dataset": dataset["id"]}, format="json").status_code == 404
    assert other.get(f"/api/heads/compare/?a={head}&b={head}").status_code == 404
    assert client.get(f"/api/heads/compare/?a={head}").status_code == 400
    # The whole dataset is used when it has no validation split.
    whole = tmp_path / "whole.npz"
    rng = np.random.default_rng(7)
    np.savez(whole, x=rng.standard_normal((40, 8)).astype(np.float32), y=rng.integers(0, 3, 40))
    job = _evaluate(client, head, ready_dataset(client, whole, "whole")["id"])
    assert (job["result"]["split"], job["result"]["metrics"]["num_examples"]) == ("all", 40)
