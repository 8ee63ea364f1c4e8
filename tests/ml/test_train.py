"""Training: heads, feature cache, joint/disjoint runs, fine-tuning, progress, cancel, seeds."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from modelhub.ml.errors import InvalidDatasetError, TrainingCancelled
from modelhub.ml.features import cached_features, compute_features, dataset_sha256
from modelhub.ml.freeze import freeze_backbone
from modelhub.ml.inspect import weights_fingerprint
from modelhub.ml.train.backbone import fine_tune
from modelhub.ml.train.evaluate import evaluate_head
from modelhub.ml.train.heads import train_head, train_heads
from modelhub.ml.train.model import build_head
from tests.ml.conftest import image_batch


@pytest.fixture
def dataset():
    images = image_batch(48, seed=5)
    labels = (images[:, :, :, 0].mean(axis=(1, 2)) > 0).astype("int32")
    return images, labels


@pytest.fixture
def frozen(backbone):
    freeze_backbone(backbone)
    return backbone


def test_build_head_variants():
    dense = build_head([6], units=3, activation="sigmoid", name="tags")
    assert [type(layer).__name__ for layer in dense.layers] == ["InputLayer", "Dense"]
    mlp = build_head([2, 3], units=4, kind="mlp", activation="linear", hidden_units=[5, 3], dropout=0.2)
    assert [layer.name for layer in mlp.layers] == [
        "features",
        "flatten",
        "hidden_0",
        "dropout_0",
        "hidden_1",
        "dropout_1",
        "output",
    ]
    assert mlp.outputs[0].shape[1:] == (4,)


def test_feature_cache(frozen, tmp_path, dataset):
    images, _ = dataset
    features, info = cached_features(frozen, images, cache_dir=tmp_path)
    assert not info["hit"] and info["backbone_sha256"] == weights_fingerprint(frozen)
    assert info["dataset_sha256"] == dataset_sha256(images)
    np.testing.assert_allclose(features, np.asarray(frozen(images, training=False)), atol=1e-6)
    again, info2 = cached_features(frozen, images, cache_dir=tmp_path)
    assert info2["hit"] and info2["path"] == info["path"]
    np.testing.assert_array_equal(again, features)
    _, other = cached_features(frozen, images[:10], cache_dir=tmp_path)
    assert not other["hit"] and other["path"] != info["path"]
    with pytest.raises(InvalidDatasetError, match=r"\[N, 8, 8, 3\]"):
        compute_features(frozen, np.zeros((2, 4, 4, 3), "float32"))


def test_train_head_cached_progress_and_seed(frozen, tmp_path, dataset):
    images, labels = dataset
    events = []
    first = build_head([6], units=2, seed=1)
    result = train_head(
        backbone=frozen,
        head=first,
        x=images,
        y=labels,
        epochs=3,
        batch_size=16,
        learning_rate=0.05,
        cache_dir=tmp_path,
        seed=7,
        progress=events.append,
    )
    assert result["used_feature_cache"] and result["cache"]["hit"] is False
    assert [e["epoch"] for e in events] == [1, 2, 3] and {"loss", "accuracy"} <= set(events[0])
    assert result["history"]["loss"][-1] < result["history"]["loss"][0]
    second = build_head([6], units=2, seed=1)
    again = train_head(
        backbone=frozen,
        head=second,
        x=images,
        y=labels,
        epochs=3,
        batch_size=16,
        learning_rate=0.05,
        cache_dir=tmp_path,
        seed=7,
    )
    assert again["cache"]["hit"] is True
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    metrics = evaluate_head(frozen, first, images, labels)
    predicted = np.argmax(first.predict(compute_features(frozen, images), verbose=0), axis=1)
    assert metrics["accuracy"] == pytest.approx(float(np.mean(predicted == labels)))


def test_augmentation_forces_full_forward(frozen, dataset):
    images, labels = dataset
    result = train_head(
        backbone=frozen,
        head=build_head([6], units=2),
        x=images,
        y=labels,
        epochs=1,
        augment=keras.layers.RandomFlip("horizontal", seed=1),
    )
    assert result["used_feature_cache"] is False


def test_cancel_between_batches(frozen, dataset):
    images, labels = dataset
    calls = {"n": 0}

    def should_cancel():
        calls["n"] += 1
        return calls["n"] > 2

    with pytest.raises(TrainingCancelled, match="batch 3"):
        train_head(
            backbone=frozen,
            head=build_head([6], units=2),
            x=images,
            y=labels,
            epochs=5,
            batch_size=8,
            should_cancel=should_cancel,
        )
    with pytest.raises(TrainingCancelled):
        train_heads(
            backbone=frozen,
            heads={"a": build_head([6], units=2)},
            x=images,
            ys={"a": labels},
            epochs=2,
            mode="disjoint",
            should_cancel=lambda: True,
        )


def test_train_heads_joint_and_disjoint(frozen, dataset):
    images, labels = dataset
    # A learnable regression target: a fixed linear map of the frozen features.
    box = compute_features(frozen, images) @ np.random.default_rng(0).standard_normal((6, 4)).astype("float32")
    heads = {"cls": build_head([6], units=2, seed=1), "box": build_head([6], units=4, activation="linear", seed=2)}
    joint = train_heads(
        backbone=frozen,
        heads=heads,
        x=images,
        ys={"cls": labels, "box": box},
        epochs=3,
        mode="joint",
        learning_rates=0.02,
        loss_weights={"cls": 1.0, "box": 0.5},
    )
    assert joint["history"]["total"]["loss"][-1] < joint["history"]["total"]["loss"][0]
    heads = {"cls": build_head([6], units=2, seed=1), "box": build_head([6], units=4, activation="linear", seed=2)}
    disjoint = train_heads(
        backbone=frozen,
        heads=heads,
        x=images,
        ys={"cls": labels, "box": box},
        epochs=4,
        mode="disjoint",
        learning_rates={"cls": 0.05, "box": 0.01},
        seed=3,
    )
    assert disjoint["learning_rates"] == {"box": 0.01, "cls": 0.05}
    for task in ("cls", "box"):
        losses = disjoint["history"][task]["loss"]
        assert losses[-1] < losses[0]
    with pytest.raises(InvalidDatasetError, match="targets for every head"):
        train_heads(backbone=frozen, heads=heads, x=images, ys={"cls": labels}, epochs=1)


def test_fine_tune_returns_new_backbone(backbone, dataset):
    images, labels = dataset
    original = [w.copy() for w in backbone.get_weights()]
    head = build_head([6], units=2, seed=1)
    phases = []
    result = fine_tune(
        backbone=backbone,
        head=head,
        x=images,
        y=labels,
        phase1_epochs=1,
        phase2_epochs=1,
        unfreeze_layers=1,
        learning_rate=0.01,
        seed=0,
        progress=phases.append,
    )
    assert result["phase2_learning_rate"] == pytest.approx(0.001)
    assert result["unfreeze"]["unfrozen_layers"] == ["conv2"]
    assert [p["phase"] for p in phases] == ["phase1", "phase2"]
    for before, after in zip(original, backbone.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)  # input backbone untouched
    tuned = result["backbone"]
    changed = [not np.array_equal(a, b) for a, b in zip(original, result["backbone_weights"], strict=True)]
    conv2_kernel_index = [w.path for w in tuned.weights].index(tuned.get_layer("conv2").kernel.path)
    assert changed[conv2_kernel_index]
    assert sum(changed) == 2  # only conv2 kernel + bias moved
    metrics = evaluate_head(tuned, head, images, labels)
    # Recomputed with Keras (the tuned backbone, then the head) and NumPy.
    probabilities = np.asarray(head(tuned(images, training=False), training=False), np.float64)
    assert metrics["accuracy"] == pytest.approx(float(np.mean(probabilities.argmax(axis=1) == labels)), abs=1e-9)
    expected_loss = -np.mean(np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1)))
    assert metrics["loss"] == pytest.approx(float(expected_loss), rel=1e-4)
    assert metrics["num_examples"] == 48


def test_dataset_checks(frozen):
    with pytest.raises(InvalidDatasetError, match="3 inputs and 2 targets"):
        train_head(backbone=frozen, head=build_head([6], units=2), x=image_batch(3), y=np.zeros(2), epochs=1)
