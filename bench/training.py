"""Benchmark head training: cached features vs a naive fit of the frozen full model per head.

Usage: python bench/training.py --heads 10   (prints ONE JSON object as its last line)
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

from modelhub.ml.features import cached_features  # noqa: E402
from modelhub.ml.freeze import freeze_backbone  # noqa: E402
from modelhub.ml.train import _full_model, build_head, evaluate_head, train_heads  # noqa: E402

SIZE = 64
NUM_CLASSES = 10


def make_dataset(num_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images = one of 10 smooth class prototypes + noise; returns (images, class ids)."""
    rng = np.random.default_rng(0)
    coarse = rng.standard_normal((NUM_CLASSES, 8, 8, 3)).astype("float32")
    prototypes = np.repeat(np.repeat(coarse, SIZE // 8, axis=1), SIZE // 8, axis=2)
    draw = np.random.default_rng(seed)
    classes = draw.integers(0, NUM_CLASSES, num_rows)
    noise = draw.standard_normal((num_rows, SIZE, SIZE, 3)).astype("float32")
    return prototypes[classes] + 1.5 * noise, classes


def task_labels(classes: np.ndarray, task: int) -> np.ndarray:
    """Task t groups the 10 classes into 2 + t % 4 labels with its own permutation."""
    permutation = np.random.default_rng(100 + task).permutation(NUM_CLASSES)
    return (permutation[classes] % (2 + task % 4)).astype("int32")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--heads", type=int, default=10)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--skip-api", action="store_true", help="skip the API-overhead run")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    backbone = keras.applications.MobileNetV2(
        input_shape=(SIZE, SIZE, 3), weights=None, include_top=False, pooling="avg"
    )
    freeze_backbone(backbone)
    x_train, c_train = make_dataset(args.rows, seed=1)
    x_val, c_val = make_dataset(500, seed=2)
    cache_dir = tempfile.mkdtemp(prefix="bench-features-")

    def head_for(task: int) -> keras.Model:
        return build_head([1280], units=2 + task % 4, name=f"task_{task}", seed=task)

    start = time.perf_counter()
    cached_features(backbone, x_train, cache_dir=cache_dir)
    feature_s = time.perf_counter() - start
    # All heads in one joint run on the cached features: per-head gradients are independent
    # (disjoint parameters, per-parameter Adam), so this equals training them one by one.
    cached = {f"task_{task}": head_for(task) for task in range(args.heads)}
    result = train_heads(
        backbone=backbone,
        heads=cached,
        x=x_train,
        ys={f"task_{task}": task_labels(c_train, task) for task in range(args.heads)},
        epochs=args.epochs,
        batch_size=args.batch_size,
        mode="joint",
        cache_dir=cache_dir,
        seed=0,
    )
    assert result["used_feature_cache"]
    cached_heads = [cached[f"task_{task}"] for task in range(args.heads)]
    cached_s = time.perf_counter() - start

    start = time.perf_counter()
    naive_heads = []
    for task in range(args.heads):
        keras.utils.set_random_seed(task)
        head = head_for(task)
        model = _full_model(backbone, head, None)
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
        )
        keras.utils.set_random_seed(task)
        model.fit(x_train, task_labels(c_train, task), epochs=args.epochs, batch_size=args.batch_size, verbose=0)
        naive_heads.append(head)
    naive_s = time.perf_counter() - start

    gaps, cached_acc, naive_acc = [], [], []
    for task in range(args.heads):
        y_val = task_labels(c_val, task)
        a = evaluate_head(backbone, cached_heads[task], x_val, y_val)["accuracy"]
        b = evaluate_head(backbone, naive_heads[task], x_val, y_val)["accuracy"]
        cached_acc.append(a)
        naive_acc.append(b)
        gaps.append(abs(a - b))
    report = {
        "machine": f"{os.cpu_count()} CPU cores, no GPU",
        "heads": args.heads,
        "rows": args.rows,
        "epochs": args.epochs,
        "image_size": SIZE,
        "feature_pass_s": feature_s,
        "cached_total_s": cached_s,
        "naive_total_s": naive_s,
        "speedup": naive_s / cached_s,
        "accuracy_gap": max(gaps),
        "mean_accuracy_gap": float(np.mean(gaps)),
        "cached_accuracy_mean": float(np.mean(cached_acc)),
        "naive_accuracy_mean": float(np.mean(naive_acc)),
    }
    report["targets_met"] = {
        "speedup>=20": report["speedup"] >= 20,
        "accuracy_gap<=0.01": report["accuracy_gap"] <= 0.01,
    }
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
