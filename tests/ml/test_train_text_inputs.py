"""Training on text and several-input backbones: inputs as arrays of str or dicts by input name.

Two tiny backbones stand for the seed's users: a text one (TextVectorization, Embedding,
pooling) and a two-input one (token ids of any length + 3 numbers). Features, the cache,
trained heads' metrics and fine-tuned models are checked against Keras run directly.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from modelhub.ml.errors import InvalidDatasetError
from modelhub.ml.features import cached_features, compute_features, dataset_sha256, num_rows, take_rows
from modelhub.ml.freeze import freeze_backbone
from modelhub.ml.grow import grow_model
from modelhub.ml.train.backbone import fine_tune, train_grown_backbone
from modelhub.ml.train.evaluate import evaluate_head, evaluate_head_outputs
from modelhub.ml.train.heads import train_head, train_heads
from modelhub.ml.train.model import build_head, feature_shape

WORDS = ["good", "great", "fine", "bad", "awful", "poor", "the", "movie", "plot", "was"]


def make_text_backbone(seed: int = 0) -> keras.Model:
    """Return text (string, (1,)) -> TextVectorization -> Embedding -> mean pool -> Dense(6)."""
    keras.utils.set_random_seed(seed)
    vectorize = keras.layers.TextVectorization(max_tokens=20, output_sequence_length=6, name="vectorize")
    vectorize.adapt([" ".join(WORDS)])
    text = keras.Input((1,), dtype="string", name="text")
    x = keras.layers.Embedding(20, 8, name="embed")(vectorize(text))
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(text, keras.layers.Dense(6, activation="tanh", name="features")(x), name="text_bb")


def make_two_input_backbone(seed: int = 0) -> keras.Model:
    """Return {token_ids int32 (None,), numeric float32 (3,)} -> 6 features."""
    keras.utils.set_random_seed(seed)
    tokens = keras.Input((None,), dtype="int32", name="token_ids")
    numeric = keras.Input((3,), name="numeric")
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(keras.layers.Embedding(30, 4, name="embed")(tokens))
    joined = keras.layers.Concatenate(name="join")([pooled, keras.layers.Dense(4, name="num")(numeric)])
    features = keras.layers.Dense(6, activation="tanh", name="features")(joined)
    return keras.Model({"token_ids": tokens, "numeric": numeric}, features, name="two_bb")


def text_data(num_rows: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return (n, 1) sentences and labels: 1 when the sentence has a positive word."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, num_rows)
    sentences = [
        " ".join([*rng.choice(WORDS[6:], 3), str(rng.choice(WORDS[:3] if label else WORDS[3:6]))]) for label in labels
    ]
    return np.array(sentences, dtype=object).reshape(-1, 1), labels.astype("int64")


def two_input_data(num_rows: int = 48, seed: int = 0) -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng(seed)
    numeric = rng.standard_normal((num_rows, 3)).astype("float32")
    return {
        "token_ids": rng.integers(1, 30, (num_rows, 5)).astype("int32"),
        "numeric": numeric,
    }, (numeric[:, 0] > 0).astype("int64")


def keras_loss_and_accuracy(backbone, head, x, y) -> tuple[float, float]:
    """Loss and accuracy of backbone + head computed by Keras itself (one call, no library code)."""
    predictions = np.asarray(head(backbone(x, training=False), training=False), np.float64)
    loss = float(np.mean(keras.losses.sparse_categorical_crossentropy(y, predictions)))
    return loss, float(np.mean(predictions.argmax(1) == y))


def test_string_hash_separates_boundaries_and_dicts_hash_by_name():
    assert dataset_sha256(np.array(["ab", "c"], dtype=object)) != dataset_sha256(np.array(["a", "bc"], dtype=object))
    # The same strings as object or unicode arrays are the same data.
    assert dataset_sha256(np.array(["ab", "c"], dtype=object)) == dataset_sha256(np.array(["ab", "c"]))
    ids, values = np.arange(6, dtype="int32").reshape(2, 3), np.ones((2, 3), "float32")
    assert dataset_sha256({"a": ids, "b": values}) == dataset_sha256({"b": values, "a": ids})
    assert dataset_sha256({"a": ids, "b": values}) != dataset_sha256({"a": values, "b": ids})
    assert dataset_sha256({"a": ids}) != dataset_sha256(ids)


def test_row_counts_must_agree_and_rows_are_taken_together():
    with pytest.raises(InvalidDatasetError, match="'numeric' 4, 'token_ids' 5"):
        num_rows({"token_ids": np.zeros((5, 2)), "numeric": np.zeros((4, 3))})
    x, _ = two_input_data(6)
    order = np.array([5, 0, 3])
    taken = take_rows(x, order)
    np.testing.assert_array_equal(taken["token_ids"], x["token_ids"][order])
    np.testing.assert_array_equal(taken["numeric"], x["numeric"][order])


def test_inputs_that_do_not_fit_say_both_sides():
    backbone = make_two_input_backbone()
    x, _ = two_input_data(4)
    with pytest.raises(InvalidDatasetError, match=r"'token_ids' \(int32, \[None\]\).*received 'numeric'"):
        compute_features(backbone, {"numeric": x["numeric"]})
    with pytest.raises(InvalidDatasetError, match="by name"):
        compute_features(backbone, x["numeric"])
    with pytest.raises(InvalidDatasetError, match="input 'text' .* text"):
        compute_features(make_text_backbone(), np.zeros((4, 1), "float32"))


@pytest.mark.parametrize("kind", ["text", "two_inputs"])
def test_cached_features_equal_keras_and_hit_the_second_time(tmp_path, kind):
    backbone = make_text_backbone() if kind == "text" else make_two_input_backbone()
    x = text_data(10)[0] if kind == "text" else two_input_data(10)[0]
    first, info = cached_features(backbone, x, cache_dir=tmp_path, batch_size=3)  # several batches
    np.testing.assert_allclose(first, np.asarray(backbone(x, training=False)), atol=1e-6)
    again, info_again = cached_features(backbone, x, cache_dir=tmp_path)
    assert (info["hit"], info_again["hit"]) == (False, True)
    assert info_again["path"] == info["path"]
    np.testing.assert_array_equal(again, first)
    # Other rows are another cache entry.
    _, other = cached_features(backbone, take_rows(x, slice(0, 9)), cache_dir=tmp_path)
    assert not other["hit"] and other["path"] != info["path"]


@pytest.mark.parametrize("kind", ["text", "two_inputs"])
def test_train_head_cached_and_full_pass_metrics_match_keras(tmp_path, kind):
    make = make_text_backbone if kind == "text" else make_two_input_backbone
    x, y = text_data() if kind == "text" else two_input_data()
    x_val, y_val = text_data(16, seed=1) if kind == "text" else two_input_data(16, seed=1)
    for frozen in (True, False):
        backbone = make()
        if frozen:
            freeze_backbone(backbone)
        head = build_head(feature_shape(backbone), units=2, seed=0)
        outcome = train_head(
            backbone=backbone, head=head, x=x, y=y, epochs=3, batch_size=8, learning_rate=0.05,
            cache_dir=tmp_path, seed=0, validation_data=(x_val, y_val),
        )  # fmt: skip
        assert outcome["used_feature_cache"] is frozen
        loss, accuracy = keras_loss_and_accuracy(backbone, head, x_val, y_val)
        assert outcome["history"]["val_loss"][-1] == pytest.approx(loss, rel=1e-4)
        assert outcome["history"]["val_accuracy"][-1] == pytest.approx(accuracy)
        scores = evaluate_head(backbone, head, x_val, y_val)
        assert scores["loss"] == pytest.approx(loss, rel=1e-4) and scores["accuracy"] == pytest.approx(accuracy)


@pytest.mark.parametrize("mode", ["joint", "disjoint"])
def test_train_heads_on_two_inputs_learn_from_aligned_rows(tmp_path, mode):
    backbone = make_two_input_backbone()
    freeze_backbone(backbone)
    x, y = two_input_data(96)
    ys = {"sign": y, "other": (x["numeric"][:, 1] > 0).astype("int64")}
    heads = {task: build_head(feature_shape(backbone), units=2, seed=i) for i, task in enumerate(ys)}
    before = {task: keras_loss_and_accuracy(backbone, head, x, ys[task])[0] for task, head in heads.items()}
    rates = 0.05 if mode == "joint" else {"sign": 0.05, "other": 0.02}
    result = train_heads(
        backbone=backbone, heads=heads, x=x, ys=ys, epochs=8, mode=mode, batch_size=16,
        learning_rates=rates, cache_dir=tmp_path, seed=0,
    )  # fmt: skip
    assert result["mode"] == mode
    for task, head in heads.items():
        loss, _ = keras_loss_and_accuracy(backbone, head, x, ys[task])
        metrics, outputs = evaluate_head_outputs(backbone, head, x, ys[task], cache_dir=tmp_path)
        assert metrics["loss"] == pytest.approx(loss, rel=1e-4)
        np.testing.assert_allclose(outputs, np.asarray(head(backbone(x))), atol=1e-6)
        assert loss < before[task], (task, before[task], loss)


@pytest.mark.parametrize("kind", ["text", "two_inputs"])
def test_fine_tune_returns_a_tuned_backbone_keras_agrees_with(tmp_path, kind):
    backbone = make_text_backbone() if kind == "text" else make_two_input_backbone()
    x, y = text_data() if kind == "text" else two_input_data()
    head = build_head(feature_shape(backbone), units=2, seed=0)
    result = fine_tune(
        backbone=backbone, head=head, x=x, y=y, phase1_epochs=1, phase2_epochs=2, unfreeze_layers=2,
        learning_rate=0.05, batch_size=8, cache_dir=tmp_path, seed=0,
    )  # fmt: skip
    tuned = result["backbone"]
    changed = [
        layer.name
        for layer, original in zip(tuned.layers, backbone.layers, strict=True)
        if any(not np.array_equal(a, b) for a, b in zip(layer.get_weights(), original.get_weights(), strict=True))
    ]
    assert changed and "features" in changed
    # The tuned copy keeps the vocabulary (a text backbone) and computes what Keras computes.
    loss, accuracy = keras_loss_and_accuracy(tuned, head, x, y)
    scores = evaluate_head(tuned, head, x, y)
    assert scores["loss"] == pytest.approx(loss, rel=1e-4) and scores["accuracy"] == pytest.approx(accuracy)
    assert len(result["history"]["phase2"]["loss"]) == 2


def test_grow_and_train_a_text_backbone():
    backbone = make_text_backbone()
    x, y = text_data()
    grown = grow_model(backbone, kind="dense_identity", after="pool", train="new")
    model = grown["model"]
    assert grown["verification"]["max_abs_diff"] <= 1e-5
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(backbone(x)), atol=1e-5)
    before = [w.copy() for w in model.get_layer(grown["new_layers"][0]).get_weights()]
    history = train_grown_backbone(backbone=model, x=x, y=y, num_classes=2, epochs=2, batch_size=8)["history"]
    assert len(history["loss"]) == 2
    after = model.get_layer(grown["new_layers"][0]).get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
