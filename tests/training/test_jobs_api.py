"""Training jobs through the API with a real worker process over Redis."""

import numpy as np
import pytest

from backbones.models import BackboneVersion
from heads.models import HeadVersion
from tests import model_factory as mf
from tests.registry_helpers import assert_job_succeeded, ready_backbone
from tests.training.helpers import (
    approved_trained_head,
    finished_job,
    post_job,
    ready_dataset,
    setup_backbone_and_data,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _download_model(client, url: str, path):
    """Download a stored .keras file and load it with Keras (safe mode)."""
    import keras

    response = client.get(url)
    assert response.status_code == 200, url
    path.write_bytes(b"".join(response.streaming_content))
    return keras.saving.load_model(path, safe_mode=True, compile=False)


def test_train_head_end_to_end_stores_metrics_and_a_draft_head(api_client_for, model_files, celery_worker, tmp_path):
    client = api_client_for("ana")
    backbone, dataset = setup_backbone_and_data(client, model_files, tmp_path)
    job = post_job(
        client,
        "train_head",
        backbone=backbone["id"],
        dataset=dataset["id"],
        task="quadrant",
        head={"type": "dense"},
        epochs=4,
        batch_size=16,
        learning_rate=0.05,
        seed=1,
    )
    body = finished_job(client, job["id"])
    assert_job_succeeded(body)
    assert [m["epoch"] for m in body["metrics"]] == [1, 2, 3, 4]
    assert all({"loss", "val_loss", "val_accuracy"} <= set(m) for m in body["metrics"])
    assert body["progress"]["epoch"] == 4 and body["progress"]["epochs"] == 4
    assert "epoch 4/4" in body["log"]
    head = client.get(f"/api/heads/{body['result']['head_versions'][0]}/").json()
    assert (head["status"], head["task"], head["output_width"], head["backbone"]) == (
        "draft",
        "quadrant",
        3,
        backbone["id"],
    )
    assert head["labels"] == ["class_0", "class_1", "class_2"]
    assert head["metrics"]["val_accuracy"] == body["metrics"][-1]["val_accuracy"]
    assert len(head["metrics"]["history"]) == 4
    # The last epoch's validation figures, recomputed with the downloaded models, Keras and NumPy.
    data = np.load(tmp_path / "train.npz")
    x_val, y_val = data["x_val"], data["y_val"]
    backbone_model = _download_model(client, f"/api/backbones/{backbone['id']}/download/", tmp_path / "bb.keras")
    head_model = _download_model(client, f"/api/heads/{head['id']}/download/", tmp_path / "head.keras")
    probabilities = np.asarray(head_model(backbone_model(x_val, training=False), training=False), np.float64)
    expected_loss = -np.mean(np.log(np.clip(probabilities[np.arange(len(y_val)), y_val], 1e-7, 1)))
    last = body["metrics"][-1]
    assert last["val_accuracy"] == pytest.approx(float(np.mean(probabilities.argmax(axis=1) == y_val)), abs=1e-6)
    assert last["val_loss"] == pytest.approx(float(expected_loss), rel=1e-4)


@pytest.mark.parametrize("mode", ["joint", "disjoint"])
def test_train_heads_in_both_modes(api_client_for, model_files, celery_worker, tmp_path, mode):
    client = api_client_for("ana")
    backbone, first = setup_backbone_and_data(client, model_files, tmp_path, rule_seed=0)
    second = ready_dataset(client, mf.make_classification_npz(tmp_path / "b.npz", rule_seed=1, num_classes=4), "b")
    rates = (0.01, 0.01) if mode == "joint" else (0.01, 0.05)
    job = post_job(
        client,
        "train_heads",
        backbone=backbone["id"],
        mode=mode,
        epochs=3,
        batch_size=32,
        seed=0,
        tasks=[
            {"task": "a", "dataset": first["id"], "head": {"type": "dense"}, "learning_rate": rates[0]},
            {"task": "b", "dataset": second["id"], "head": {"type": "mlp", "hidden": [8]}, "learning_rate": rates[1]},
        ],
    )
    body = finished_job(client, job["id"])
    assert_job_succeeded(body)
    assert len(body["metrics"]) == 3 and {"a_loss", "b_loss"} <= set(body["metrics"][0])
    heads = [client.get(f"/api/heads/{i}/").json() for i in body["result"]["head_versions"]]
    assert sorted((h["task"], h["output_width"]) for h in heads) == [("a", 3), ("b", 4)]


def test_grow_backbone_preserves_the_function_and_carries_heads(api_client_for, model_files, celery_worker, tmp_path):
    import keras

    author = api_client_for("ana")
    reviewer = api_client_for("rita", role="reviewer")
    backbone, dataset = setup_backbone_and_data(author, model_files, tmp_path)
    approved_trained_head(author, reviewer, backbone=backbone["id"], dataset=dataset["id"], task="quadrant", epochs=1)

    job = post_job(author, "grow_backbone", backbone=backbone["id"], insert={"after_layer": "hidden", "kind": "dense"})
    body = finished_job(author, job["id"])
    assert_job_succeeded(body)
    assert body["result"]["verification"]["max_abs_diff"] <= 1e-6
    grown = author.get(f"/api/backbones/{body['result']['backbone_version']}/").json()
    assert grown["parent"] == backbone["id"] and grown["version"] == 2 and grown["origin"]["kind"] == "grow"
    assert len(grown["spec"]["layers"]) == len(backbone["spec"]["layers"]) + 1
    carried = author.get(f"/api/heads/?backbone={grown['id']}").json()["results"]
    assert [(h["task"], h["status"]) for h in carried] == [("quadrant", "approved")]

    for name, version in (("parent", backbone["id"]), ("grown", grown["id"])):
        (tmp_path / f"{name}.keras").write_bytes(
            b"".join(author.get(f"/api/backbones/{version}/download/").streaming_content)
        )
    x = np.random.default_rng(99).standard_normal((32, 8)).astype("float32")
    parent_out = keras.saving.load_model(tmp_path / "parent.keras", safe_mode=True)(x)
    grown_out = keras.saving.load_model(tmp_path / "grown.keras", safe_mode=True)(x)
    np.testing.assert_allclose(np.asarray(grown_out), np.asarray(parent_out), atol=1e-6)


def test_fine_tune_makes_a_child_backbone_and_a_forgetting_report(api_client_for, model_files, celery_worker, tmp_path):
    author = api_client_for("ana")
    reviewer = api_client_for("rita", role="reviewer")
    backbone, dataset = setup_backbone_and_data(author, model_files, tmp_path)
    old_head = approved_trained_head(
        author, reviewer, backbone=backbone["id"], dataset=dataset["id"], task="old-task", epochs=2, learning_rate=0.05
    )
    other = ready_dataset(author, mf.make_classification_npz(tmp_path / "new.npz", rule_seed=5), "new")

    job = post_job(
        author,
        "fine_tune",
        backbone=backbone["id"],
        dataset=other["id"],
        task="new-task",
        unfreeze_top=1,
        warmup_epochs=1,
        epochs=2,
        learning_rate=0.05,
    )
    body = finished_job(author, job["id"])
    assert_job_succeeded(body)
    assert [m.get("phase") for m in body["metrics"]] == ["warmup", "finetune", "finetune"]
    child = author.get(f"/api/backbones/{body['result']['backbone_version']}/").json()
    assert child["parent"] == backbone["id"] and child["weights_sha256"] != backbone["weights_sha256"]
    new_head = author.get(f"/api/heads/{body['result']['head_versions'][0]}/").json()
    assert (new_head["backbone"], new_head["status"]) == (child["id"], "draft")

    report = author.get(f"/api/forgetting-reports/{body['forgetting_report']}/").json()
    assert report["status"] == "pending"
    [row] = report["rows"]
    assert (row["head_version"], row["task"], row["metric"]) == (old_head, "old-task", "accuracy")
    assert row["delta"] == pytest.approx(row["after"] - row["before"])
    # Recomputed independently: the downloaded head on the old task's validation split, through
    # the downloaded parent (before) and child (after) backbones, with Keras and NumPy.
    data = np.load(tmp_path / "train.npz")
    x_val, y_val = data["x_val"], data["y_val"]
    head = _download_model(author, f"/api/heads/{old_head}/download/", tmp_path / "old-head.keras")
    for key, version in (("before", backbone["id"]), ("after", child["id"])):
        model = _download_model(author, f"/api/backbones/{version}/download/", tmp_path / f"{key}.keras")
        probabilities = np.asarray(head(model(x_val, training=False), training=False))
        assert row[key] == pytest.approx(float(np.mean(probabilities.argmax(axis=1) == y_val)), abs=1e-9), key
    assert row["num_examples"] == len(y_val) > 0
    assert author.get(f"/api/heads/?backbone={child['id']}&status=approved").json()["count"] == 0

    assert author.post(f"/api/forgetting-reports/{report['id']}/accept/").status_code == 403
    accepted = reviewer.post(f"/api/forgetting-reports/{report['id']}/accept/")
    assert accepted.status_code == 200 and accepted.json()["status"] == "accepted"
    carried = author.get(f"/api/heads/?backbone={child['id']}&status=approved").json()["results"]
    assert [h["task"] for h in carried] == ["old-task"]


def small_mobilenet(path):
    """MobileNetV2 (alpha 0.35, 32x32, random weights with calibrated batch statistics), saved; return it."""
    import keras

    from tests.real_models import calibrate_batch_norm

    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, include_top=False, pooling="avg"
    )
    calibrate_batch_norm(base, image_rows(32, seed=100))
    base.save(path)
    return base


def image_rows(num_rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 255.0, (num_rows, 32, 32, 3)).astype("float32")


def image_dataset_npz(path):
    x, x_val = image_rows(64, seed=1), image_rows(16, seed=2)
    labels = [(rows[..., 0].mean(axis=(1, 2)) > rows[..., 2].mean(axis=(1, 2))).astype("int64") for rows in (x, x_val)]
    np.savez(path, x=x, y=labels[0], x_val=x_val, y_val=labels[1])
    return path


def test_fine_tune_to_a_branch_creates_no_backbone_version(api_client_for, celery_worker, tmp_path):
    """The head owns the tuned top of MobileNetV2 as a branch on the unchanged parent backbone."""
    import keras

    from artifacts.services import blob_fetch_verified
    from modelhub.ml.branches import trunk_until
    from modelhub.ml.inspect import copy_model
    from training.models import ForgettingReport

    client = api_client_for("ana")
    small_mobilenet(tmp_path / "mobilenet.keras")
    parent = ready_backbone(client, tmp_path / "mobilenet.keras", name="mobilenet")
    dataset = ready_dataset(client, image_dataset_npz(tmp_path / "images.npz"), "images")
    backbones_before = BackboneVersion.objects.count()

    # The top 9 weight-bearing layers end inside residual block 15 (its project_BN): the branch
    # starts below that block, at block_14_add, and carries block 15's first layers unchanged.
    job = post_job(
        client, "fine_tune", backbone=parent["id"], dataset=dataset["id"], task="texture", unfreeze_top=9,
        warmup_epochs=1, epochs=2, batch_size=16, learning_rate=0.01, finetune_lr_factor=0.5, seed=0,
        output="branch",
    )  # fmt: skip
    assert job["params"]["output"] == "branch"
    body = finished_job(client, job["id"], timeout=300)
    assert_job_succeeded(body)
    assert BackboneVersion.objects.count() == backbones_before and not ForgettingReport.objects.exists()
    result = body["result"]
    assert result["backbone_version"] is None and result["forgetting_report"] is None
    assert body["forgetting_report"] is None
    assert "No backbone version was created and no forgetting report is needed" in result["note"]
    assert result["verification"]["max_abs_diff"] <= result["verification"]["tolerance"]

    head = client.get(f"/api/heads/{result['head_versions'][0]}/").json()
    assert (head["backbone"], head["status"], head["task"]) == (parent["id"], "draft", "texture")
    branch = head["branch"]
    assert branch == result["branch"] and set(branch) == {"after_layer", "layers", "params"}
    assert branch["after_layer"] == "block_14_add" and branch["layers"][0] == "block_15_expand"
    trained = ["Conv_1_bn", "Conv_1", "block_16_project_BN", "block_16_project", "block_16_depthwise_BN",
               "block_16_depthwise", "block_16_expand_BN", "block_16_expand", "block_15_project_BN"]  # fmt: skip
    assert set(trained) <= set(branch["layers"]) and "block_15_project" in branch["layers"]

    # The parent backbone is byte for byte the file uploaded: every other head's trunk is untouched.
    download = b"".join(client.get(f"/api/backbones/{parent['id']}/download/").streaming_content)
    assert download == (tmp_path / "mobilenet.keras").read_bytes()
    row = HeadVersion.objects.select_related("branch_blob").get(pk=head["id"])
    blob_fetch_verified(blob=row.branch_blob, destination=tmp_path / "branch.keras")
    (tmp_path / "head.keras").write_bytes(b"".join(client.get(f"/api/heads/{head['id']}/download/").streaming_content))
    parent_model = keras.saving.load_model(tmp_path / "mobilenet.keras", safe_mode=True)
    branch_model = keras.saving.load_model(tmp_path / "branch.keras", safe_mode=True)
    head_model = keras.saving.load_model(tmp_path / "head.keras", safe_mode=True)
    assert branch_model.count_params() == branch["params"]

    def weights(model, name):
        return model.get_layer(name).get_weights()

    # Trained layers moved; block 15's layers below the trained ones are carried unchanged; batch
    # normalization ran in inference mode (moving statistics are the parent's; scale and offset trained).
    assert not np.array_equal(weights(branch_model, "Conv_1")[0], weights(parent_model, "Conv_1")[0])
    for name in ("block_15_expand", "block_15_expand_BN", "block_15_depthwise", "block_15_project"):
        for mine, theirs in zip(weights(branch_model, name), weights(parent_model, name), strict=True):
            np.testing.assert_array_equal(mine, theirs)
    gamma, _, mean, variance = weights(branch_model, "Conv_1_bn")
    parent_gamma, _, parent_mean, parent_variance = weights(parent_model, "Conv_1_bn")
    assert not np.array_equal(gamma, parent_gamma)
    np.testing.assert_array_equal(mean, parent_mean)
    np.testing.assert_array_equal(variance, parent_variance)

    # Independently of how the branch was cut: the parent with the branch's weights put back in
    # place is the tuned model; parent trunk + branch + head compute what it computes.
    tuned = copy_model(parent_model)
    for name in branch["layers"]:
        tuned.get_layer(name).set_weights(weights(branch_model, name))
    x = image_rows(8, seed=7)
    expected = np.asarray(head_model(tuned(x)))
    got = np.asarray(head_model(branch_model(trunk_until(parent_model, branch["after_layer"])(x))))
    np.testing.assert_allclose(got, expected, atol=1e-5 * max(1.0, float(np.abs(expected).max())))


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"kind": "train_head", "dataset": "WRONG_SHAPE", "task": "t", "head": {"type": "dense"}}, "shape [8]. Res"),
        ({"kind": "train_head", "task": "t", "head": {"type": "dense", "units": 2}}, "range over 3 classes"),
        ({"kind": "grow_backbone", "insert": {"after_layer": "nope", "kind": "dense"}}, "Layer 'nope' does not exist"),
        ({"kind": "fine_tune", "task": "t", "unfreeze_top": 9}, "'unfreeze_top' must be between 1 and 2"),
        ({"kind": "train_head", "task": "t", "early_stopping": {"patience": 2}, "dataset": "NO_VALIDATION"}, "has no"),
    ],
)
def test_cheap_checks_fail_the_job_at_once(api_client_for, model_files, celery_worker, tmp_path, params, expected):
    client = api_client_for("ana")
    backbone, dataset = setup_backbone_and_data(client, model_files, tmp_path)
    params = dict(params)
    if params.get("dataset") == "WRONG_SHAPE":
        path = tmp_path / "wrong.npz"
        np.savez(path, x=np.zeros((10, 5), dtype="float32"), y=np.zeros(10, dtype="int64"))
        params["dataset"] = ready_dataset(client, path, "wrong")["id"]
    if params.get("dataset") == "NO_VALIDATION":
        path = tmp_path / "no-val.npz"
        np.savez(path, x=np.zeros((10, 8), dtype="float32"), y=np.zeros(10, dtype="int64"))
        params["dataset"] = ready_dataset(client, path, "no-val")["id"]
    params.setdefault("dataset", dataset["id"])
    kind = params.pop("kind")
    job = post_job(client, kind, backbone=backbone["id"], **params)
    assert job["status"] == "failed"
    assert expected in job["error"]
    assert HeadVersion.objects.count() == 0 and BackboneVersion.objects.count() == 1
