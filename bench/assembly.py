"""Benchmark assemblies at scale: size, build + verify vs I/O, latency, mixed throughput, memory.

Usage: python bench/assembly.py --heads 200      (prints ONE JSON object as its last line)
       python bench/assembly.py --heads 10000 --workdir /tmp/bench-asm --keep

Everything is measured side by side in one run, on MobileNetV2 (96x96x3, weights=None, pooled
1280 features) and N Dense(10) softmax heads:

- Files. Each head is written the way the registry stores it: its ``.keras`` artifact and its
  packed Dense weights (``modelhub.ml.head_weights``, written when a head is validated).
- ``floor_s``: saving a backbone-only SavedModel (the same raw-variable module, one signature)
  plus reading every head artifact's bytes, each in a fresh process.
- ``build_s`` / ``verify_s`` / ``build_peak_rss_mb``: ``build_assembly`` from the packed weights
  and ``verify_assembly``, in a fresh process, as the worker runs them. With ``--rounds R`` the
  floor and the build alternate R times and ``build_plus_verify_ratio`` is the median round's.
- Serving, in one process: latency at batch 1 and 32 against backbone + one head (a SavedModel
  of just those); a B=256 batch over 64 distinct tasks against the backbone alone at B=256; the
  same batch routed to per-task SavedModels (backbone + head, one call per distinct task).
- Head stage and wide-head memory (N <= 1000): the head stage against computing every head, and
  the extra memory of a B=256 batch over 20 heads 1000 wide.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modelhub.ml.assembly.build import directory_bytes  # noqa: E402

IMAGE = (96, 96, 3)
FEATURES = 1280
MIXED_BATCH = 256
MIXED_TASKS = 64


# --------------------------------------------------------------------------- files


def make_backbone():
    import keras

    from bench.common import randomize_batch_norm

    keras.utils.set_random_seed(0)
    inputs = keras.Input(IMAGE, name="image")
    net = keras.applications.MobileNetV2(input_shape=IMAGE, weights=None, include_top=False, pooling="avg")
    randomize_batch_norm(net, seed=0)
    return keras.Model(inputs, net(inputs), name="mobilenet_v2")


def make_head(index: int, width: int = 10):
    import keras
    import numpy as np

    rng = np.random.default_rng(1000 + index)
    inputs = keras.Input((FEATURES,), name="features")
    dense = keras.layers.Dense(width, activation="softmax" if width <= 10 else None, name="out")
    model = keras.Model(inputs, dense(inputs), name=f"head_{index}")
    dense.set_weights(
        [
            rng.standard_normal((FEATURES, width)).astype("float32") * 0.05,
            rng.standard_normal(width).astype("float32") * 0.1,
        ]
    )
    return model


def write_files(work: Path, num_heads: int) -> None:
    """The backbone's .keras file, and per head its .keras artifact and packed weights (reused)."""
    from modelhub.ml.head_weights import dense_chain_of, pack

    (work / "heads").mkdir(parents=True, exist_ok=True)
    if not (work / "backbone.keras").exists():
        make_backbone().save(work / "backbone.keras")
    for index in range(num_heads):
        artifact, packed = work / "heads" / f"{index}.keras", work / "heads" / f"{index}.packed"
        if artifact.exists() and packed.exists():
            continue
        head = make_head(index)
        head.save(artifact)
        packed.write_bytes(pack(dense_chain_of(head)))


# --------------------------------------------------------------------------- subprocess steps

STEP_PRELUDE = textwrap.dedent(
    """
    import json, os, resource, sys, time
    from pathlib import Path
    sys.path.insert(0, {root!r})
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import keras, numpy as np, tensorflow as tf
    work = Path({work!r})
    num_heads = {num_heads}
    backbone = keras.saving.load_model(work / "backbone.keras", compile=False, safe_mode=True)
    from bench.assembly import save_backbone_alone
    """
)

FLOOR_STEP = """
start = time.perf_counter()
save_backbone_alone(backbone, work / "out" / "backbone_only")
save_s = time.perf_counter() - start
start = time.perf_counter()
total = 0
for index in range(num_heads):
    with open(work / "heads" / f"{index}.keras", "rb") as handle:
        total += len(handle.read())
read_s = time.perf_counter() - start
print(json.dumps({"backbone_save_s": save_s, "read_artifacts_s": read_s, "artifact_bytes": total}))
"""

BUILD_STEP = """
from modelhub.ml.assembly.build import build_assembly
from modelhub.ml.assembly.manifest import AssemblyHead
from modelhub.ml.assembly.verify import verify_assembly
from modelhub.ml.head_weights import PackedDenseHead, unpack, unpack_steps
baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

def packed(index):
    path = work / "heads" / f"{index}.packed"
    def load():
        with open(path, "rb") as handle:
            return unpack(handle.read())
    return load

steps, width = unpack_steps((work / "heads" / "0.packed").read_bytes())
start = time.perf_counter()
heads = [
    AssemblyHead(f"task-{i}", PackedDenseHead(steps, width, packed(i)), 1, f"{i:064x}") for i in range(num_heads)
]
info = {"name": "mobilenet_v2", "version": 1, "sha256": "0" * 64}
build_assembly(backbone=backbone, heads=heads, export_dir=work / "out" / "assembly", backbone_info=info,
               verify=False, per_head_signatures={signatures})
build_s = time.perf_counter() - start
start = time.perf_counter()
verification = verify_assembly(work / "out" / "assembly", backbone, [h.model for h in heads])
verify_s = time.perf_counter() - start
print(json.dumps({"build_s": build_s, "verify_s": verify_s, "max_abs_diff": verification["max_abs_diff"],
                  "checked": verification["checked"], "baseline_rss_mb": baseline_kb / 1024,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

SEPARATE_STEP = """
from bench.assembly import make_head, save_backbone_plus_head
for index in range({count}):
    target = work / "separate" / f"task-{{index}}"
    if not (target / "saved_model.pb").exists():
        save_backbone_plus_head(backbone, make_head(index), target)
print(json.dumps({{"saved": {count}}}))
"""


def run_step(work: Path, num_heads: int, body: str) -> dict:
    script = STEP_PRELUDE.format(root=str(ROOT), work=str(work), num_heads=num_heads) + body
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=7200)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark step failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def save_backbone_alone(backbone, export_dir: Path) -> None:
    """The reference: the same raw-variable tf.Module approach with only the backbone."""
    from bench.common import save_raw_saved_model

    save_raw_saved_model(backbone, export_dir, IMAGE)


def save_backbone_plus_head(backbone, head, export_dir: Path) -> None:
    """A per-task model as a team without ModelHub ships it: backbone + one head."""
    import tensorflow as tf

    module = tf.Module()
    module.variables_list = [v.value for v in backbone.variables] + [v.value for v in head.variables]
    spec = tf.TensorSpec([None, *IMAGE], tf.float32, "inputs")

    @tf.function(input_signature=[spec])
    def serve(inputs):
        return {"outputs": head(backbone(inputs, training=False), training=False)}

    tf.saved_model.save(module, str(export_dir), signatures={"serving_default": serve})


# --------------------------------------------------------------------------- serving


def interleaved_medians(functions: dict, repeats: int) -> dict:
    from bench.common import interleaved_medians as medians

    return medians(functions, repeats)


def serving_report(work: Path, num_heads: int, repeats: int, separate: int) -> dict:
    import numpy as np
    import tensorflow as tf

    report: dict = {}
    assembled = tf.saved_model.load(str(work / "out" / "assembly"))
    backbone_only = tf.saved_model.load(str(work / "out" / "backbone_only"))
    single = tf.saved_model.load(str(work / "separate" / "task-0"))
    serve = assembled.signatures["serving_default"]
    serve_backbone = backbone_only.signatures["serving_default"]
    serve_single = single.signatures["serving_default"]
    rng = np.random.default_rng(0)
    for batch in (1, 32):
        images = tf.constant(rng.standard_normal((batch, *IMAGE)).astype("float32"))
        tasks = tf.constant(rng.integers(0, num_heads, batch).astype(np.int32))
        for _ in range(3):
            serve(inputs=images, task_id=tasks)
            serve_single(inputs=images)
        medians = interleaved_medians(
            {
                "assembled": lambda i=images, t=tasks: serve(inputs=i, task_id=t),
                "backbone_plus_one_head": lambda i=images: serve_single(inputs=i),
            },
            repeats,
        )
        report[f"latency_ms_b{batch}"] = {k: round(v * 1000, 3) for k, v in medians.items()}
        report[f"latency_ratio_b{batch}"] = medians["assembled"] / medians["backbone_plus_one_head"]

    # B=256 over 64 distinct tasks (4 rows each, shuffled).
    images = tf.constant(rng.standard_normal((MIXED_BATCH, *IMAGE)).astype("float32"))
    chosen = rng.choice(num_heads, size=min(MIXED_TASKS, num_heads), replace=False).astype(np.int32)
    task_ids = rng.permutation(np.resize(chosen, MIXED_BATCH)).astype(np.int32)
    tasks = tf.constant(task_ids)
    for _ in range(2):
        serve(inputs=images, task_id=tasks)
        serve_backbone(inputs=images)
    medians = interleaved_medians(
        {
            "assembled": lambda: serve(inputs=images, task_id=tasks),
            "backbone_alone": lambda: serve_backbone(inputs=images),
        },
        max(5, repeats // 3),
    )
    report["mixed_batch"] = {"rows": MIXED_BATCH, "distinct_tasks": int(len(set(task_ids.tolist())))}
    report["mixed_rows_per_s"] = {k: round(MIXED_BATCH / v, 1) for k, v in medians.items()}
    report["mixed_throughput_ratio"] = medians["backbone_alone"] / medians["assembled"]

    if separate:
        # Route the same rows to per-task SavedModels: one call per distinct task. Task k of the
        # batch is served by model (k mod `separate`): every call runs a backbone on that task's rows.
        models = [tf.saved_model.load(str(work / "separate" / f"task-{i}")) for i in range(separate)]
        signatures = [model.signatures["serving_default"] for model in models]
        distinct = sorted(set(task_ids.tolist()))
        rows_of = {task: np.flatnonzero(task_ids == task) for task in distinct}
        model_of = {task: position % separate for position, task in enumerate(distinct)}
        image_rows = {task: tf.gather(images, rows_of[task]) for task in distinct}

        def routed():
            out = np.zeros((MIXED_BATCH, 10), np.float32)
            for task in distinct:
                out[rows_of[task]] = signatures[model_of[task]](inputs=image_rows[task])["outputs"].numpy()
            return out

        def assembled_call():
            return serve(inputs=images, task_id=tasks)["outputs"].numpy()

        routed()
        medians = interleaved_medians({"assembled": assembled_call, "separate_models": routed}, max(3, repeats // 6))
        report["separate_models"] = {
            "models_loaded": separate,
            "calls_per_batch": len(distinct),
            "ms": {k: round(v * 1000, 1) for k, v in medians.items()},
        }
        report["separate_models_speedup"] = medians["separate_models"] / medians["assembled"]
        one_model = directory_bytes(work / "separate" / "task-0")
        report["separate_models_bytes_ratio"] = len(distinct) * one_model / directory_bytes(work / "out" / "assembly")
    return report


HEAD_STAGE_STEP = """
from bench.assembly import make_head
loaded = tf.saved_model.load(str(work / "out" / "assembly"))
rng = np.random.default_rng(0)
features = tf.constant(rng.standard_normal((32, 1280)).astype("float32"))
tasks = tf.constant(rng.integers(0, num_heads, 32).astype(np.int32))
head_models = [make_head(i) for i in range(num_heads)]

@tf.function
def all_heads(features, task_id):
    outputs = tf.stack([model(features, training=False) for model in head_models], axis=1)
    return tf.gather(outputs, task_id, axis=1, batch_dims=1)

diff = float(np.max(np.abs(all_heads(features, tasks).numpy() - loaded.head_stage(features, tasks).numpy())))
repeats = 50

def in_graph(stage):
    # `repeats` calls inside one graph; the inputs vary per iteration, so nothing can be hoisted.
    @tf.function
    def run(features, task_id):
        def body(i, total):
            return i + 1, total + tf.reduce_sum(stage(features + tf.cast(i, tf.float32) * 1e-6, task_id))
        return tf.while_loop(lambda i, total: i < repeats, body, [tf.constant(0), tf.constant(0.0)])[1]
    return run

ours_in_graph, all_in_graph = in_graph(loaded.head_stage), in_graph(all_heads)

ours_in_graph(features, tasks); all_in_graph(features, tasks)
times = {"ours": [], "all_heads": []}
for _ in range(15):
    for name, fn in (("ours", ours_in_graph), ("all_heads", all_in_graph)):
        start = time.perf_counter(); fn(features, tasks); times[name].append(time.perf_counter() - start)
med = {k: float(np.median(v)) / repeats for k, v in times.items()}
print(json.dumps({"head_stage_ms": {k: v * 1000 for k, v in med.items()},
                  "head_stage_speedup": med["all_heads"] / med["ours"], "head_stage_max_abs_diff": diff}))
"""

WIDE_STEP = """
from bench.assembly import make_head
from modelhub.ml.assembly.build import build_assembly
from modelhub.ml.assembly.manifest import AssemblyHead
heads = [AssemblyHead(f"wide-{{i}}", make_head(i, {wide_width}), 1, f"{{i:064x}}") for i in range({wide_heads})]
info = {{"name": "mobilenet_v2", "version": 1, "sha256": "0" * 64}}
build_assembly(backbone=backbone, heads=heads, export_dir=work / "out" / "wide", backbone_info=info, verify=False)
print(json.dumps({{"built": True}}))
"""

WIDE_MEMORY = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np
    import tensorflow as tf
    loaded = tf.saved_model.load(sys.argv[1])
    num_heads = int(sys.argv[2])
    rng = np.random.default_rng(0)
    warm = tf.constant(rng.standard_normal((4, 1280)).astype("float32"))
    loaded.head_stage(warm, tf.constant([0, 1, 2, 3]) % num_heads)
    features = tf.constant(rng.standard_normal((256, 1280)).astype("float32"))
    mixed = tf.constant(rng.integers(0, num_heads, 256).astype(np.int32))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    loaded.head_stage(features, mixed)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"extra_mb": (after - before) / 1024, "distinct": len(set(mixed.numpy().tolist()))}))
    """
)


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=1, help="floor/build rounds (the median ratio is reported)")
    parser.add_argument("--separate-models", type=int, default=MIXED_TASKS, help="per-task SavedModels (0: skip)")
    parser.add_argument("--task-signatures", action="store_true", help="also build per-task signatures")
    parser.add_argument("--wide-heads", type=int, default=20)
    parser.add_argument("--wide-width", type=int, default=1000)
    parser.add_argument("--workdir", type=Path, help="where the files go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the files (a later run reuses them)")
    args = parser.parse_args()
    work = args.workdir.resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="bench-assembly-"))
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "out", ignore_errors=True)
    (work / "out").mkdir()
    report: dict = {"heads": args.heads, "machine": f"{os.cpu_count()} CPU cores, no GPU"}
    try:
        start = time.perf_counter()
        write_files(work, args.heads)
        report["write_files_s"] = round(time.perf_counter() - start, 1)

        # The floor and the build alternate, each in a fresh process, for --rounds rounds: on a
        # shared machine each ratio compares steps run seconds apart; the median ratio is reported.
        ratios = []
        for _ in range(max(1, args.rounds)):
            for stale in ("assembly", "backbone_only"):
                shutil.rmtree(work / "out" / stale, ignore_errors=True)
            floor = run_step(work, args.heads, FLOOR_STEP)
            build = run_step(work, args.heads, BUILD_STEP.replace("{signatures}", str(args.task_signatures)))
            floor_s = floor["backbone_save_s"] + floor["read_artifacts_s"]
            ratios.append(round((build["build_s"] + build["verify_s"]) / floor_s, 3))
        report["build_plus_verify_ratios"] = ratios
        assembled_bytes = directory_bytes(work / "out" / "assembly")
        backbone_only_bytes = directory_bytes(work / "out" / "backbone_only")
        head_param_bytes = args.heads * 4 * (FEATURES * 10 + 10)
        import keras

        backbone_param_bytes = 4 * keras.saving.load_model(work / "backbone.keras", compile=False).count_params()
        report.update(
            {
                "floor": floor,
                "floor_s": floor_s,
                "build": build,
                "build_plus_verify_ratio": statistics.median(ratios),
                "assembled_bytes": assembled_bytes,
                "backbone_only_bytes": backbone_only_bytes,
                "head_param_bytes": head_param_bytes,
                "head_bytes_ratio": (assembled_bytes - backbone_only_bytes) / head_param_bytes,
                "size_ratio": assembled_bytes / (backbone_param_bytes + head_param_bytes),
                "build_peak_rss_mb": build["peak_rss_mb"],
                "build_rss_over_assembled": build["peak_rss_mb"] * 2**20 / assembled_bytes,
            }
        )
        run_step(work, args.heads, SEPARATE_STEP.format(count=max(1, args.separate_models)))
        report.update(serving_report(work, args.heads, args.repeats, args.separate_models))
        if args.heads <= 1000:
            report.update(run_step(work, args.heads, HEAD_STAGE_STEP))
            run_step(work, args.heads, WIDE_STEP.format(wide_width=args.wide_width, wide_heads=args.wide_heads))
            proc = subprocess.run(
                [sys.executable, "-c", WIDE_MEMORY, str(work / "out" / "wide"), str(args.wide_heads)],
                capture_output=True,
                text=True,
                check=True,
            )
            memory = json.loads(proc.stdout.strip().splitlines()[-1])
            report["mixed_batch_extra_mb"] = memory["extra_mb"]
            report["naive_per_row_gather_mb"] = 256 * FEATURES * args.wide_width * 4 / 2**20
        large = args.heads >= 10000
        report["targets_met"] = {
            "head_bytes_ratio<=1.05": report["head_bytes_ratio"] <= 1.05,
            "build_plus_verify_ratio<=3": report["build_plus_verify_ratio"] <= 3,
            f"latency_ratio_b1<={1.10 if large else 1.05}": report["latency_ratio_b1"] <= (1.10 if large else 1.05),
            f"latency_ratio_b32<={1.10 if large else 1.05}": report["latency_ratio_b32"] <= (1.10 if large else 1.05),
            f"mixed_throughput_ratio>={0.90 if large else 0.95}": report["mixed_throughput_ratio"]
            >= (0.90 if large else 0.95),
        }
        if large:  # the memory target is for 10,000 heads: below, TensorFlow's own ~600 MB dominates
            report["targets_met"]["build_rss_over_assembled<3"] = report["build_rss_over_assembled"] < 3
        if "separate_models_speedup" in report:
            report["targets_met"]["separate_models_speedup>=10"] = report["separate_models_speedup"] >= 10
        report["peak_rss_mb_bench_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
