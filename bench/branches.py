"""Benchmark trunk and branches: 50 tasks fine-tuned in the top of one MobileNetV2-96.

Usage: python bench/branches.py [--tasks 50] [--repeats 30]   (prints ONE JSON object last)

Each task is the shared MobileNetV2 (96x96x3, alpha 1.0, weights=None, trained-looking batch
statistics) with its top k in {1, 2, 4} inverted-residual blocks fine-tuned (k = 1, 2, 4 in
turn; the weights move as tests/branched_models.py moves them), plus a Dense(10) softmax head.
Its branch is cut from its fine-tuned backbone file with ``modelhub.ml.branches.extract_branch``
and the assembly is built with ``build_assembly`` (verification on), as the worker builds it.

Printed, all measured in this one run:

- ``size_ratio``: assembled bytes / (trunk + sum of branches + sum of heads parameter bytes);
  the trunk is the backbone segments the SavedModel stores (up to the deepest branch point
  when every task has a branch). Target <= 1.10.
- ``vs_full_models``: assembled bytes / the 50 full models' ``.keras`` bytes.
- ``latency_ratio_1task``: serving_default on 32 rows of one task / that task's full model
  alone (a SavedModel of it) on the same 32 rows, for k = 1, 2, 4; target <= 1.10 (the max).
- ``latency_ratio_16tasks``: 32 rows over 16 distinct tasks / one full model on 32 rows, with
  the cost model it follows: the trunk once (each segment on the rows still on it), plus each
  distinct branch on its 2 rows, plus the heads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

IMAGE = (96, 96, 3)
TOPS = (1, 2, 4)


def make_base():
    import keras

    from bench.common import randomize_batch_norm

    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(input_shape=IMAGE, weights=None, include_top=False, pooling="avg")
    randomize_batch_norm(base, seed=0)
    return base


def export_full(model, path: Path) -> None:
    """A SavedModel of one full model, stored like the assembly (raw variables, one signature)."""
    from bench.common import save_raw_saved_model

    save_raw_saved_model(model, path, IMAGE)


def interleaved_medians(functions: dict, repeats: int) -> dict:
    from bench.common import interleaved_medians as medians

    return medians(functions, repeats, warmup=True)


def param_bytes(model) -> int:
    return int(sum(w.size * w.dtype.itemsize for w in model.get_weights()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    from modelhub.ml.assembly.build import build_assembly, directory_bytes
    from modelhub.ml.assembly.manifest import AssemblyHead
    from modelhub.ml.assembly.trunk import AssemblyBranch
    from modelhub.ml.branches import cut_backbone, extract_branch
    from tests.branched_models import BRANCH_POINTS, fine_tuned_copy

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-branches-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    base = make_base()
    base_path = work / "backbone.keras"
    base.save(base_path)
    heads, full_bytes, full_models = [], 0, {}
    for index in range(args.tasks):
        k = TOPS[index % len(TOPS)]
        tuned = fine_tuned_copy(base, k, seed=1000 + index)
        tuned_path = work / "tuned.keras"
        tuned.save(tuned_path)
        branch, info = extract_branch(tuned_path, BRANCH_POINTS[k], name=f"task{index}_branch")
        keras.utils.set_random_seed(index)
        features = keras.Input((int(base.outputs[0].shape[-1]),), name="features")
        head = keras.Model(features, keras.layers.Dense(10, activation="softmax")(features), name=f"task{index}")
        full = keras.Model(tuned.input, head(tuned.output), name=f"full{index}")
        full_path = work / f"full{index}.keras"
        full.save(full_path)
        full_bytes += full_path.stat().st_size
        full_path.unlink()
        if k not in full_models:
            full_models[k] = (index, full)
        sha = hashlib.sha256(f"branch-{index}".encode()).hexdigest()
        heads.append(
            AssemblyHead(
                task=f"task{index}",
                model=head,
                version=1,
                sha256=hashlib.sha256(f"head-{index}".encode()).hexdigest(),
                branch=AssemblyBranch(info.after_layer, branch, sha, info.layers),
            )
        )
    prepare_s = time.perf_counter() - started

    trunk = cut_backbone(base_path, {h.branch.after_layer for h in heads}, include_top=False)
    start = time.perf_counter()
    result = build_assembly(
        backbone=base,
        heads=heads,
        export_dir=work / "assembly",
        backbone_info={"name": "mobilenet", "version": 1, "sha256": "0" * 64},
        trunk=trunk,
    )
    build_s = time.perf_counter() - start
    assembled = directory_bytes(work / "assembly")
    trunk_bytes = sum(param_bytes(segment) for segment in trunk.segments)
    branch_bytes = sum(param_bytes(h.branch.model) for h in heads)
    head_bytes = sum(param_bytes(h.model) for h in heads)
    components = trunk_bytes + branch_bytes + head_bytes

    loaded = tf.saved_model.load(str(work / "assembly"))
    serve = loaded.signatures["serving_default"]
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (32, *IMAGE)).astype("float32"))
    one_task: dict = {}
    full_serves = {}
    for k, (index, full) in sorted(full_models.items()):
        export_full(full, work / f"full-{k}")
        full_serves[k] = tf.saved_model.load(str(work / f"full-{k}")).signatures["serving_default"]
        task_ids = tf.constant(np.full(32, index, np.int32))
        got = serve(inputs=images, task_id=task_ids)["outputs"].numpy()[:, :10]
        expected = full_serves[k](inputs=images)["outputs"].numpy()
        medians = interleaved_medians(
            {
                "assembly": lambda t=task_ids: serve(inputs=images, task_id=t),
                "full": lambda f=full_serves[k]: f(inputs=images),
            },
            args.repeats,
        )
        one_task[str(k)] = {
            "ratio": medians["assembly"] / medians["full"],
            "assembly_ms": medians["assembly"] * 1000,
            "full_ms": medians["full"] * 1000,
            "max_abs_diff": float(np.max(np.abs(got - expected))),
        }

    # 32 rows over 16 distinct tasks (2 rows each), against one full model on 32 rows.
    distinct = min(16, args.tasks)  # fewer with --tasks < 16
    mixed = tf.constant(np.resize(np.arange(distinct, dtype=np.int32), 32)[rng.permutation(32)])
    reference_full = full_serves[4]
    branch_fns = {
        k: tf.function(
            heads[index].branch.model,
            input_signature=[tf.TensorSpec([None, *trunk.shapes[trunk.points.index(BRANCH_POINTS[k])]], tf.float32)],
        )
        for k, (index, _) in full_models.items()
    }
    branch_inputs = {
        k: tf.constant(rng.standard_normal((2, *trunk.shapes[trunk.points.index(BRANCH_POINTS[k])])).astype("float32"))
        for k in branch_fns
    }
    functions = {
        "assembly_16": lambda: serve(inputs=images, task_id=mixed),
        "full_32": lambda: reference_full(inputs=images),
        **{f"branch_{k}_2rows": (lambda f=fn, x=branch_inputs[k]: f(x)) for k, fn in branch_fns.items()},
    }
    medians = interleaved_medians(functions, args.repeats)
    tops_16 = [TOPS[i % len(TOPS)] for i in range(distinct)]
    predicted = medians["full_32"] + sum(medians[f"branch_{k}_2rows"] for k in tops_16)
    report = {
        "tasks": args.tasks,
        "tops": list(TOPS),
        "assembled_bytes": assembled,
        "trunk_bytes": trunk_bytes,
        "branch_bytes": branch_bytes,
        "head_bytes": head_bytes,
        "size_ratio": assembled / components,
        "full_models_bytes": full_bytes,
        "vs_full_models": assembled / full_bytes,
        "latency_ratio_1task": max(item["ratio"] for item in one_task.values()),
        "latency_1task_by_k": one_task,
        "latency_ratio_16tasks": medians["assembly_16"] / medians["full_32"],
        "latency_16tasks_ms": {name: value * 1000 for name, value in medians.items()},
        "cost_model_16tasks": {
            "formula": "full model on 32 rows (an upper bound of the trunk: rows leave it at their branch point) "
            "+ sum over the 16 tasks of its branch on 2 rows",
            "predicted_ratio": predicted / medians["full_32"],
        },
        "build_s": build_s,
        "prepare_s": prepare_s,
        "verification_max_rel_diff": result["verification"]["max_rel_diff"],
        "trunk_points": trunk.points,
    }
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
