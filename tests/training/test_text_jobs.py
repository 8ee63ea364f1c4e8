"""Jobs on text and two-input backbones, through the HTTP API and a real worker.

A tiny text backbone (TextVectorization, Embedding, pooling) and a two-input one (token ids of
any length + 3 numbers) are uploaded as backbones; .npz datasets hold strings and named arrays
(x_token_ids, x_numeric), and a CSV holds text,label. Every trained head is downloaded and its
reported metrics recomputed with Keras on the original backbone; a dataset whose inputs do not
match is refused when the job is created, naming both sides.
"""

import keras
import numpy as np
import pytest

from backbones.models import BackboneVersion
from heads.models import HeadVersion
from tests.registry_helpers import assert_job_succeeded, ready_backbone
from tests.training.helpers import finished_job, post_job, ready_dataset

pytestmark = pytest.mark.django_db(transaction=True)

POSITIVE, NEGATIVE, FILLER = ["good", "great", "fine"], ["bad", "awful", "poor"], ["the", "movie", "plot", "was"]


def text_backbone(path):
    keras.utils.set_random_seed(0)
    vectorize = keras.layers.TextVectorization(max_tokens=20, output_sequence_length=6, name="vectorize")
    vectorize.adapt([" ".join(POSITIVE + NEGATIVE + FILLER)])
    text = keras.Input((1,), dtype="string", name="text")
    x = keras.layers.GlobalAveragePooling1D(name="pool")(keras.layers.Embedding(20, 8, name="embed")(vectorize(text)))
    x = keras.layers.Dense(8, activation="relu", name="hidden")(x)
    keras.Model(text, keras.layers.Dense(6, activation="tanh", name="features")(x), name="textbb").save(path)
    return path


def two_input_backbone(path):
    keras.utils.set_random_seed(0)
    tokens = keras.Input((None,), dtype="int32", name="token_ids")
    numeric = keras.Input((3,), name="numeric")
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(keras.layers.Embedding(30, 4, name="embed")(tokens))
    joined = keras.layers.Concatenate(name="join")([pooled, keras.layers.Dense(4, name="num")(numeric)])
    features = keras.layers.Dense(6, activation="tanh", name="features")(joined)
    keras.Model({"token_ids": tokens, "numeric": numeric}, features, name="twobb").save(path)
    return path


def sentences(num_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (n,) unicode sentences and labels (1: a positive word)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, num_rows)
    words = [" ".join([*rng.choice(FILLER, 3), str(rng.choice(POSITIVE if label else NEGATIVE))]) for label in y]
    return np.array(words), y.astype("int64")


def text_npz(path, *, seed: int = 0, flip: bool = False):
    x, y = sentences(48, seed)
    x_val, y_val = sentences(16, seed + 100)
    if flip:
        y, y_val = 1 - y, 1 - y_val
    np.savez(path, x=x, y=y, x_val=x_val, y_val=y_val)  # unicode arrays: no pickle
    return path


def keras_metrics(backbone_path, head_bytes, tmp_path, x, y) -> tuple[float, float]:
    """Loss and accuracy of the downloaded head on the uploaded backbone, computed by Keras alone."""
    (tmp_path / "head.keras").write_bytes(head_bytes)
    backbone = keras.saving.load_model(backbone_path, safe_mode=True)
    head = keras.saving.load_model(tmp_path / "head.keras", safe_mode=True)
    predictions = np.asarray(head(backbone(x)), np.float64)
    loss = float(np.mean(keras.losses.sparse_categorical_crossentropy(y, predictions)))
    return loss, float(np.mean(predictions.argmax(1) == y))


def download(client, url) -> bytes:
    return b"".join(client.get(url).streaming_content)


def test_text_backbone_train_head_heads_evaluate_and_branch(api_client_for, celery_worker, tmp_path):
    client = api_client_for("ana")
    path = text_backbone(tmp_path / "text.keras")
    backbone = ready_backbone(client, path, name="text")
    assert backbone["spec"]["inputs"] == [{"name": "text", "shape": [1], "dtype": "string"}]
    data = ready_dataset(client, text_npz(tmp_path / "reviews.npz"), "reviews")
    assert data["inputs"] == [{"name": "x", "kind": "string", "shape": [], "dtype": "string"}]
    x_val, y_val = (arr.reshape(-1, 1).astype(object) if arr.dtype.kind == "U" else arr for arr in sentences(16, 100))

    job = post_job(
        client, "train_head", backbone=backbone["id"], dataset=data["id"], task="sentiment",
        head={"type": "dense"}, epochs=4, batch_size=8, learning_rate=0.05, seed=0,
    )  # fmt: skip
    body = assert_job_succeeded(finished_job(client, job["id"]))
    head_id = body["result"]["head_versions"][0]
    head_bytes = download(client, f"/api/heads/{head_id}/download/")
    loss, accuracy = keras_metrics(path, head_bytes, tmp_path, x_val, y_val)
    metrics = HeadVersion.objects.get(pk=head_id).metrics
    assert metrics["val_loss"] == pytest.approx(loss, rel=1e-4) and metrics["val_accuracy"] == pytest.approx(accuracy)

    evaluation = assert_job_succeeded(finished_job(client, client.post(
        f"/api/heads/{head_id}/evaluate/", {"dataset": data["id"]}, format="json").json()["id"]))  # fmt: skip
    assert evaluation["result"]["split"] == "validation"
    assert evaluation["result"]["metrics"]["loss"] == pytest.approx(loss, rel=1e-4)
    assert evaluation["result"]["metrics"]["accuracy"] == pytest.approx(accuracy)

    flipped = ready_dataset(client, text_npz(tmp_path / "flipped.npz", flip=True), "flipped")
    tasks = [
        {"task": "plain", "dataset": data["id"], "head": {"type": "dense"}, "learning_rate": 0.05},
        {"task": "flipped", "dataset": flipped["id"], "head": {"type": "dense"}, "learning_rate": 0.02},
    ]
    body = assert_job_succeeded(finished_job(client, post_job(
        client, "train_heads", backbone=backbone["id"], tasks=tasks, mode="disjoint", epochs=6, batch_size=8, seed=0,
    )["id"]))  # fmt: skip
    for head_id, flip in zip(body["result"]["head_versions"], (False, True), strict=True):
        y = 1 - y_val if flip else y_val
        loss, accuracy = keras_metrics(path, download(client, f"/api/heads/{head_id}/download/"), tmp_path, x_val, y)
        assert HeadVersion.objects.get(pk=head_id).metrics["val_loss"] == pytest.approx(loss, rel=1e-4)

    job = post_job(
        client, "fine_tune", backbone=backbone["id"], dataset=data["id"], task="tuned", unfreeze_top=1,
        warmup_epochs=1, epochs=2, batch_size=8, learning_rate=0.05, seed=0, output="branch",
    )  # fmt: skip
    body = assert_job_succeeded(finished_job(client, job["id"]))
    assert body["result"]["backbone_version"] is None and body["result"]["branch"]["layers"] == ["features"]
    assert body["result"]["verification"]["max_abs_diff"] <= body["result"]["verification"]["tolerance"]
    assert BackboneVersion.objects.count() == 1


def test_grow_with_training_on_a_text_backbone(api_client_for, celery_worker, tmp_path):
    client = api_client_for("ana")
    backbone = ready_backbone(client, text_backbone(tmp_path / "text.keras"), name="text")
    data = ready_dataset(client, text_npz(tmp_path / "reviews.npz"), "reviews")
    job = post_job(
        client, "grow_backbone", backbone=backbone["id"], insert={"after_layer": "hidden", "kind": "dense"},
        train={"dataset": data["id"], "epochs": 2, "batch_size": 8, "learning_rate": 0.01},
    )  # fmt: skip
    body = assert_job_succeeded(finished_job(client, job["id"]))
    grown_path = tmp_path / "grown.keras"
    grown_path.write_bytes(download(client, f"/api/backbones/{body['result']['backbone_version']}/download/"))
    grown = keras.saving.load_model(grown_path, safe_mode=True)
    words = np.array([["good movie"], ["awful plot"]], dtype=object)
    assert np.asarray(grown(words)).shape == (2, 6)  # the vocabulary came along: no uninitialised table


def two_input_npz(path, *, seed: int = 0, length: int = 5):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, rows in (("", 48), ("_val", 16)):
        numeric = rng.standard_normal((rows, 3)).astype("float32")
        arrays[f"x{split}_token_ids"] = rng.integers(1, 30, (rows, length)).astype("int32")
        arrays[f"x{split}_numeric"] = numeric
        arrays[f"y{split}"] = (numeric[:, 0] > 0).astype("int64")
    np.savez(path, **arrays)
    return path, arrays


def test_two_input_backbone_train_head_and_a_mismatch_refused(api_client_for, celery_worker, tmp_path):
    client = api_client_for("ana")
    path = two_input_backbone(tmp_path / "two.keras")
    backbone = ready_backbone(client, path, name="two")
    npz, arrays = two_input_npz(tmp_path / "two.npz")
    data = ready_dataset(client, npz, "two")
    job = post_job(
        client, "train_head", backbone=backbone["id"], dataset=data["id"], task="sign",
        head={"type": "dense"}, epochs=5, batch_size=8, learning_rate=0.05, seed=0,
    )  # fmt: skip
    body = assert_job_succeeded(finished_job(client, job["id"]))
    head_id = body["result"]["head_versions"][0]
    x_val = {"token_ids": arrays["x_val_token_ids"], "numeric": arrays["x_val_numeric"]}
    loss, accuracy = keras_metrics(
        path, download(client, f"/api/heads/{head_id}/download/"), tmp_path, x_val, arrays["y_val"]
    )
    metrics = HeadVersion.objects.get(pk=head_id).metrics
    assert metrics["val_loss"] == pytest.approx(loss, rel=1e-4) and metrics["val_accuracy"] == pytest.approx(accuracy)

    # Text for a backbone that takes token ids and numbers: refused before training, both sides named.
    text = ready_dataset(client, text_npz(tmp_path / "reviews.npz"), "reviews")
    refused = post_job(client, "train_head", backbone=backbone["id"], dataset=text["id"], task="t")
    assert refused["status"] == "failed"
    assert "has inputs x (string, [])" in refused["error"]
    assert "takes numeric (float32, [3]) and token_ids (int32, [None])" in refused["error"]
    # The text backbone with the two-input dataset: names differ, said so.
    text_bb = ready_backbone(client, text_backbone(tmp_path / "text.keras"), name="text")
    refused = post_job(client, "train_head", backbone=text_bb["id"], dataset=data["id"], task="t")
    assert refused["status"] == "failed" and "no input named 'text'" in refused["error"], refused["error"]
    assert HeadVersion.objects.count() == 1


def test_text_head_from_a_csv(api_client_for, celery_worker, tmp_path):
    client = api_client_for("ana")
    path = text_backbone(tmp_path / "text.keras")
    backbone = ready_backbone(client, path, name="text")
    x, y = sentences(40, 3)
    csv = tmp_path / "reviews.csv"
    csv.write_text("text,label\n" + "".join(f"{s},{'pos' if v else 'neg'}\n" for s, v in zip(x, y, strict=True)))
    data = ready_dataset(client, csv, "reviews-csv")
    assert data["labels"] == ["neg", "pos"]
    job = post_job(
        client, "train_head", backbone=backbone["id"], dataset=data["id"], task="sentiment-csv",
        head={"type": "dense"}, epochs=3, batch_size=8, learning_rate=0.05, seed=0,
    )  # fmt: skip
    body = assert_job_succeeded(finished_job(client, job["id"]))
    head_id = body["result"]["head_versions"][0]
    x_all = x.reshape(-1, 1).astype(object)
    evaluation = assert_job_succeeded(finished_job(client, client.post(
        f"/api/heads/{head_id}/evaluate/", {"dataset": data["id"]}, format="json").json()["id"]))  # fmt: skip
    loss, accuracy = keras_metrics(path, download(client, f"/api/heads/{head_id}/download/"), tmp_path, x_all, y)
    assert evaluation["result"]["split"] == "all"
    assert evaluation["result"]["metrics"]["loss"] == pytest.approx(loss, rel=1e-4)
    assert evaluation["result"]["metrics"]["accuracy"] == pytest.approx(accuracy)
