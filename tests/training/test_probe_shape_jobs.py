"""grow_backbone (and fine_tune) on a token backbone of open length that accepts one length only.

Why: growth is checked on probe rows, and a ``(None,)`` token input needs a length the model
accepts. This backbone reshapes its embeddings to (75, 16), so only rows of 300 tokens work and
no length the worker would try on its own (every length up to 256, then 512...) does. The length
comes from the request (``probe_shape``) or, for a job with a dataset, from the dataset's rows.
Each grown backbone is downloaded and compared with the original by Keras on 300-token rows.
"""

import keras
import numpy as np
import pytest

from tests.registry_helpers import assert_job_succeeded, ready_backbone
from tests.training.helpers import finished_job, post_job, ready_dataset

pytestmark = pytest.mark.django_db(transaction=True)

LENGTH = 300  # 300 tokens x 4 embedding dims = 75 x 16
GROW = {"insert": {"after_layer": "hidden", "kind": "dense"}}


def exact_length_backbone(path):
    keras.utils.set_random_seed(0)
    tokens = keras.Input((None,), dtype="int32", name="token_ids")
    blocks = keras.layers.Reshape((75, 16), name="blocks")(keras.layers.Embedding(30, 4, name="embed")(tokens))
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(
        keras.layers.GlobalAveragePooling1D(name="pool")(blocks)
    )
    features = keras.layers.Dense(6, activation="tanh", name="features")(hidden)
    keras.Model(tokens, features, name="exactbb").save(path)
    return path


def token_npz(path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, num_rows in (("", 48), ("_val", 16)):
        tokens = rng.integers(1, 30, (num_rows, LENGTH)).astype("int32")
        arrays[f"x{split}_token_ids"] = tokens
        arrays[f"y{split}"] = (tokens[:, 0] > 15).astype("int64")
    np.savez(path, **arrays)
    return path


def assert_same_function(client, version_id: int, original_path, tmp_path) -> None:
    """The downloaded backbone version computes what the original does, on rows of LENGTH tokens."""
    grown_path = tmp_path / f"grown-{version_id}.keras"
    grown_path.write_bytes(b"".join(client.get(f"/api/backbones/{version_id}/download/").streaming_content))
    original = keras.saving.load_model(original_path, safe_mode=True)
    grown = keras.saving.load_model(grown_path, safe_mode=True)
    rows = np.random.default_rng(5).integers(0, 30, (3, LENGTH)).astype("int32")
    np.testing.assert_allclose(np.asarray(grown(rows)), np.asarray(original(rows)), atol=1e-6)


def test_grow_takes_probe_shape_from_the_request(api_client_for, celery_worker, tmp_path):
    client = api_client_for("ana")
    path = exact_length_backbone(tmp_path / "exact.keras")
    backbone = ready_backbone(client, path, name="exact")
    assert backbone["spec"]["inputs"] == [{"name": "token_ids", "shape": [None], "dtype": "int32"}]

    # Without a shape no length the worker tries fits: failed, naming the layer and the field to set.
    failed = finished_job(client, post_job(client, "grow_backbone", backbone=backbone["id"], **GROW)["id"])
    assert failed["status"] == "failed", failed
    assert "'blocks'" in failed["error"] and "probe_shape" in failed["error"], failed["error"]
    assert "Traceback" not in failed["error"]

    job = post_job(client, "grow_backbone", backbone=backbone["id"], probe_shape={"token_ids": [LENGTH]}, **GROW)
    assert job["params"]["probe_shape"] == {"token_ids": [LENGTH]}
    body = assert_job_succeeded(finished_job(client, job["id"]))
    assert body["result"]["verification"]["probe_shape"] == {"token_ids": [LENGTH]}
    assert body["result"]["verification"]["max_abs_diff"] <= 1e-6
    assert_same_function(client, body["result"]["backbone_version"], path, tmp_path)

    # A shape the model refuses: failed, naming the layer; an input it lacks: failed at once, both sides named.
    wrong = finished_job(
        client,
        post_job(client, "grow_backbone", backbone=backbone["id"], probe_shape={"token_ids": [64]}, **GROW)["id"],
    )
    assert wrong["status"] == "failed" and "'blocks'" in wrong["error"] and "[64]" in wrong["error"], wrong["error"]
    unknown = post_job(client, "grow_backbone", backbone=backbone["id"], probe_shape={"audio": [LENGTH]}, **GROW)
    assert unknown["status"] == "failed"
    assert "'audio'" in unknown["error"] and "token_ids [None]" in unknown["error"], unknown["error"]


def test_grow_with_training_and_fine_tune_take_the_length_from_the_dataset(api_client_for, celery_worker, tmp_path):
    client = api_client_for("ana")
    path = exact_length_backbone(tmp_path / "exact.keras")
    backbone = ready_backbone(client, path, name="exact")
    data = ready_dataset(client, token_npz(tmp_path / "tokens.npz"), "tokens")
    assert data["inputs"][0]["shape"] == [LENGTH]

    job = post_job(
        client, "grow_backbone", backbone=backbone["id"], **GROW,
        train={"dataset": data["id"], "epochs": 1, "batch_size": 16, "learning_rate": 0.01},
    )  # fmt: skip
    body = assert_job_succeeded(finished_job(client, job["id"]))
    assert body["result"]["verification"]["probe_shape"] == {"token_ids": [LENGTH]}
    assert "probe rows {'token_ids': [300]}" in body["log"]

    # fine_tune's check (the branch against the tuned model) runs on the dataset's own rows.
    job = post_job(
        client, "fine_tune", backbone=backbone["id"], dataset=data["id"], task="tuned", unfreeze_top=1,
        warmup_epochs=1, epochs=1, batch_size=16, seed=0, output="branch",
    )  # fmt: skip
    body = assert_job_succeeded(finished_job(client, job["id"]))
    verification = body["result"]["verification"]
    assert verification["num_probe_rows"] == 8 and verification["max_abs_diff"] <= verification["tolerance"]


@pytest.mark.parametrize(
    "probe_shape",
    [{"token_ids": [0]}, {"token_ids": 300}, {"token_ids": [True]}, "[300]", {"": [3]}, {"token_ids": [2**23]}],
)
def test_a_bad_probe_shape_is_a_400_naming_the_field(api_client_for, probe_shape):
    from training.models import Job

    client = api_client_for("ana")
    body = {"team": "vision", "kind": "grow_backbone", "backbone": 1, "probe_shape": probe_shape, **GROW}
    response = client.post("/api/jobs/", body, format="json")
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert list(error["detail"]) == ["probe_shape"]
    assert "Expected probe_shape as {input name: shape of one row}" in error["detail"]["probe_shape"][0]
    assert Job.objects.count() == 0
