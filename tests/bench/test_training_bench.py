"""bench/training.py at a small size: its "no accuracy loss" compares heads that learned.

The same computation as ``make bench`` (a MobileNetV2 calibrated on the benchmark's images,
labels the features separate, heads trained on cached features and through the full model),
narrower (alpha 0.35), on 32x32 images, 2 heads and 800 rows, so that it runs in the default set.
The accuracies are recomputed here with NumPy from each head's own weights.
"""

from __future__ import annotations

import numpy as np

from bench import training as bench


def test_calibrated_features_carry_signal_and_both_heads_beat_the_majority():
    report, backbone, _, _ = bench.measure(heads=2, rows=800, val_rows=300, epochs=5, size=32, alpha=0.35)
    # Uncalibrated random MobileNetV2 features are ~4e-12 and constant; calibrated ones vary.
    assert report["feature_std"] > 0.1, report
    per_task = report["per_task"]
    for task, majority in enumerate(per_task["majority_baseline"]):
        for path in ("accuracy_cached", "accuracy_naive"):
            assert per_task[path][task] >= majority + bench.MIN_MARGIN, (task, path, report)
    assert report["targets_met"][f"both_heads_beat_majority_by>={bench.MIN_MARGIN}"] is True
    assert report["majority_baseline"] == np.mean(per_task["majority_baseline"])
    assert report["accuracy_gap"] == max(
        abs(a - b) for a, b in zip(per_task["accuracy_cached"], per_task["accuracy_naive"], strict=True)
    )


def test_teacher_labels_are_a_linear_function_of_the_standardized_features():
    rng = np.random.default_rng(0)
    features = rng.standard_normal((200, bench.FEATURES)).astype("float32")
    center, scale = features.mean(axis=0), features.std(axis=0)
    for task in range(4):
        labels = bench.teacher_labels(features, task, center=center, scale=scale)
        assert set(np.unique(labels)) == set(range(bench.num_labels(task)))
        # Labels the features separate: no class holds nearly every row.
        assert bench.majority_rate(labels) < 1 / bench.num_labels(task) + 0.25
        projection = np.random.default_rng(100 + task).standard_normal((bench.FEATURES, bench.num_labels(task)))
        np.testing.assert_array_equal(labels, np.argmax(((features - center) / scale) @ projection, axis=1))


def test_calibration_sets_batch_norm_statistics_from_the_data():
    backbone = bench.make_backbone(size=32, alpha=0.35)
    images, _ = bench.make_dataset(64, seed=3, size=32)
    uncalibrated = np.asarray(backbone(images, training=False))
    momenta = [layer.momentum for layer in backbone.layers if hasattr(layer, "moving_mean")]
    bench.calibrate_batch_norm(backbone, images)
    calibrated = np.asarray(backbone(images, training=False))
    assert float(uncalibrated.std(axis=0).mean()) < 1e-6
    assert float(calibrated.std(axis=0).mean()) > 0.1
    # The first BatchNormalization layer's statistics are those of the first convolution's outputs.
    first = backbone.get_layer("bn_Conv1")
    pre = np.asarray(backbone.get_layer("Conv1")(images))
    np.testing.assert_allclose(np.asarray(first.moving_mean), pre.mean(axis=(0, 1, 2)), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(np.asarray(first.moving_variance), pre.var(axis=(0, 1, 2)), rtol=1e-3, atol=1e-5)
    assert [layer.momentum for layer in backbone.layers if hasattr(layer, "moving_mean")] == momenta
