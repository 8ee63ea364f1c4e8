"""Benchmark head training: cached features vs a naive fit of the frozen full model per head.

Usage: python bench/training.py --heads 10   (prints ONE JSON object as its last line)

The backbone is a MobileNetV2 with random weights. Its BatchNormalization statistics are
calibrated on the benchmark's own images (:func:`calibrate_batch_norm`): with the ``weights=None``
statistics (mean 0, variance 1) its features are about 4e-12 and carry nothing, so no head can
learn and "no accuracy loss" would compare two majority-class guesses. Random deep features do
not separate image classes (any noise scrambles them), so each task's labels are a fixed random
linear function of the standardized features (:func:`teacher_labels`): data whose labels the
features separate, learnable by a Dense head through either path. ``majority_baseline`` is
printed beside the accuracies, and ``targets_met`` asks both heads of every task to beat their
task's majority rate by ``MIN_MARGIN``. ``tests/bench/test_training_bench.py`` runs
:func:`measure` at a small size.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from modelhub.ml.features import cached_features, compute_features  # noqa: E402
from modelhub.ml.freeze import freeze_backbone  # noqa: E402
from modelhub.ml.train.evaluate import evaluate_head  # noqa: E402
from modelhub.ml.train.heads import train_heads  # noqa: E402
from modelhub.ml.train.model import build_head, full_model  # noqa: E402

SIZE = 64
NUM_CLASSES = 10
FEATURES = 1280
MIN_MARGIN = 0.10  # each head's accuracy over its task's majority-class rate


def make_dataset(num_rows: int, seed: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Images = one of 10 smooth class prototypes + noise; returns (images, class ids)."""
    rng = np.random.default_rng(0)
    coarse = rng.standard_normal((NUM_CLASSES, 8, 8, 3)).astype("float32")
    prototypes = np.repeat(np.repeat(coarse, size // 8, axis=1), size // 8, axis=2)
    draw = np.random.default_rng(seed)
    classes = draw.integers(0, NUM_CLASSES, num_rows)
    noise = draw.standard_normal((num_rows, size, size, 3)).astype("float32")
    return prototypes[classes] + 1.5 * noise, classes


def make_backbone(size: int = SIZE, alpha: float = 1.0) -> keras.Model:
    """The benchmark's MobileNetV2 (random weights, global average pooling, 1280 features).

    ``alpha`` < 1 narrows every block but the last (the test's small size); the features stay 1280 wide.
    """
    keras.utils.set_random_seed(0)
    return keras.applications.MobileNetV2(
        input_shape=(size, size, 3), alpha=alpha, weights=None, include_top=False, pooling="avg"
    )


def calibrate_batch_norm(model: keras.Model, x: np.ndarray) -> None:
    """Set every BatchNormalization layer's moving statistics to its batch statistics on ``x``.

    One forward pass in training mode with momentum 0 stores each layer's batch mean and
    variance, layer after layer on already normalized inputs, as training would have. Call it
    before :func:`freeze_backbone` (a frozen BatchNormalization layer never updates). ``model`` is
    flat, as keras.applications models are.
    """
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(x, training=True)
    for layer, momentum in zip(layers, momenta, strict=True):
        layer.momentum = momentum


def num_labels(task: int) -> int:
    """Task t has 2 + t % 4 labels."""
    return 2 + task % 4


def teacher_labels(features: np.ndarray, task: int, *, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Label = argmax of a fixed random projection (one per task) of the standardized features."""
    projection = np.random.default_rng(100 + task).standard_normal((features.shape[1], num_labels(task)))
    return np.argmax(((features - center) / scale) @ projection, axis=1).astype("int32")


def majority_rate(labels: np.ndarray) -> float:
    """The accuracy of always answering the most frequent label."""
    return float(np.bincount(labels).max() / len(labels))


def naive_fit(backbone: keras.Model, head: keras.Model, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int):
    """Fit ``head`` through the frozen backbone: every batch runs the full forward pass."""
    model = full_model(backbone, head, None)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)


def measure(
    *,
    heads: int,
    rows: int,
    val_rows: int = 500,
    epochs: int = 5,
    batch_size: int = 64,
    size: int = SIZE,
    alpha: float = 1.0,
) -> tuple[dict, keras.Model, np.ndarray, np.ndarray]:
    """Train ``heads`` heads both ways; return (report, backbone, training images, their class ids).

    Labels come from features computed before the clock starts, with the library's
    ``compute_features`` (its own traced function): the cached path's timed feature pass starts
    from a cold cache directory.
    """
    backbone = make_backbone(size, alpha)
    x_train, c_train = make_dataset(rows, seed=1, size=size)
    x_val, _ = make_dataset(val_rows, seed=2, size=size)
    calibrate_batch_norm(backbone, make_dataset(256, seed=3, size=size)[0])
    freeze_backbone(backbone)
    f_train, f_val = compute_features(backbone, x_train), compute_features(backbone, x_val)
    center, scale = f_train.mean(axis=0), f_train.std(axis=0) + 1e-6
    y_train = {f"task_{t}": teacher_labels(f_train, t, center=center, scale=scale) for t in range(heads)}
    y_val = {f"task_{t}": teacher_labels(f_val, t, center=center, scale=scale) for t in range(heads)}
    cache_dir = tempfile.mkdtemp(prefix="bench-features-")

    def head_for(task: int) -> keras.Model:
        return build_head([FEATURES], units=num_labels(task), name=f"task_{task}", seed=task)

    start = time.perf_counter()
    cached_features(backbone, x_train, cache_dir=cache_dir)
    feature_s = time.perf_counter() - start
    # All heads in one joint run on the cached features: per-head gradients are independent
    # (disjoint parameters, per-parameter Adam), so this equals training them one by one.
    cached = {f"task_{task}": head_for(task) for task in range(heads)}
    result = train_heads(
        backbone=backbone,
        heads=cached,
        x=x_train,
        ys=y_train,
        epochs=epochs,
        batch_size=batch_size,
        mode="joint",
        cache_dir=cache_dir,
        seed=0,
    )
    assert result["used_feature_cache"]
    cached_s = time.perf_counter() - start

    start = time.perf_counter()
    naive = {}
    for task in range(heads):
        keras.utils.set_random_seed(task)
        head = head_for(task)
        keras.utils.set_random_seed(task)
        naive_fit(backbone, head, x_train, y_train[f"task_{task}"], epochs=epochs, batch_size=batch_size)
        naive[f"task_{task}"] = head
    naive_s = time.perf_counter() - start

    majority, cached_acc, naive_acc = [], [], []
    for task in sorted(y_val, key=lambda name: int(name.split("_")[1])):
        majority.append(majority_rate(y_val[task]))
        cached_acc.append(evaluate_head(backbone, cached[task], x_val, y_val[task])["accuracy"])
        naive_acc.append(evaluate_head(backbone, naive[task], x_val, y_val[task])["accuracy"])
    gaps = np.abs(np.subtract(cached_acc, naive_acc))
    margin = float(np.min(np.minimum(cached_acc, naive_acc) - np.asarray(majority)))
    report = {
        "machine": f"{os.cpu_count()} CPU cores, no GPU",
        "heads": heads,
        "rows": rows,
        "epochs": epochs,
        "image_size": size,
        "alpha": alpha,
        "feature_std": float(f_train.std(axis=0).mean()),
        "feature_pass_s": feature_s,
        "cached_total_s": cached_s,
        "naive_total_s": naive_s,
        "speedup": naive_s / cached_s,
        "majority_baseline": float(np.mean(majority)),
        "accuracy_cached": float(np.mean(cached_acc)),
        "accuracy_naive": float(np.mean(naive_acc)),
        "accuracy_gap": float(np.max(gaps)),
        "mean_accuracy_gap": float(np.mean(gaps)),
        "min_margin_over_majority": margin,
        "per_task": {
            "majority_baseline": majority,
            "accuracy_cached": cached_acc,
            "accuracy_naive": naive_acc,
        },
    }
    report["cached_accuracy_mean"] = report["accuracy_cached"]
    report["naive_accuracy_mean"] = report["accuracy_naive"]
    report["targets_met"] = {
        "speedup>=20": report["speedup"] >= 20,
        "accuracy_gap<=0.01": report["accuracy_gap"] <= 0.01,
        f"both_heads_beat_majority_by>={MIN_MARGIN}": margin >= MIN_MARGIN,
    }
    return report, backbone, x_train, c_train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--heads", type=int, default=10)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--skip-api", action="store_true", help="skip the API-overhead run")
    args = parser.parse_args()
    report, backbone, x_train, c_train = measure(
        heads=args.heads, rows=args.rows, epochs=args.epochs, batch_size=args.batch_size
    )
    if not args.skip_api:
        from bench.training_api import api_overhead

        overhead = api_overhead(
            backbone=backbone,
            x=x_train,
            y=c_train.astype("int64"),
            num_heads=args.heads,
            epochs=args.epochs,
            batch_size=args.batch_size,
        )
        report.update(overhead)
        report["targets_met"]["api_overhead_ratio<=1.2"] = overhead["api_overhead_ratio"] <= 1.2
    print(json.dumps(report))


if __name__ == "__main__":
    main()
