"""Benchmark assembly exports: ONNX Runtime and LiteRT against the SavedModel, in one run.

Usage: python bench/export.py --heads 200        (prints ONE JSON object as its last line)
       python bench/export.py --heads 10000 --branched-tasks 0

On MobileNetV2 (96x96x3, weights=None, calibrated-looking BatchNorm) with N Dense(10) softmax heads
(packed weights, as the worker builds them), measured side by side in one process:

- ONNX vs the SavedModel (TensorFlow) at B=1, B=32 and a mixed B=256 batch over 64 tasks
  (``onnx_speedup_*`` = SavedModel time / ONNX time);
- the ONNX assembly / an ONNX of the backbone alone (same tf2onnx path) at B=32 and mixed;
- LiteRT latency (B=1) and size per quantization;
- each export's time / the assembly's build time (build + verify, as ``build_assembly`` runs).
- ``--branched-tasks K`` (default 50, 0 to skip): the same figures for a family of K tasks whose
  heads own branches (MobileNetV2 fine-tuned in its top 1-2 blocks, tests/branched_models.py).
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
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MIXED_BATCH = 256
MIXED_TASKS = 64
INFO = {"name": "mobilenet_v2", "version": 1, "sha256": "0" * 64}


def dense_heads(num_heads: int, features: int = 0):
    import numpy as np

    from bench.assembly import FEATURES

    FEATURES = features or FEATURES  # noqa: N806
    from modelhub.ml.assembly.manifest import AssemblyHead
    from modelhub.ml.head_weights import DenseChain, PackedDenseHead

    steps = (("dense", 10, True, "softmax"),)

    def load(index):
        rng = np.random.default_rng(1000 + index)
        kernel = rng.standard_normal((FEATURES, 10)).astype("float32") * 0.05
        bias = rng.standard_normal(10).astype("float32") * 0.1
        return lambda: DenseChain(steps, FEATURES, (kernel,), (bias,))

    return [
        AssemblyHead(f"task-{i}", PackedDenseHead(steps, FEATURES, load(i)), 1, f"{i:064x}") for i in range(num_heads)
    ]


def branched_components(num_tasks: int, work: Path):
    """K models fine-tuned in their top 1 or 2 blocks (alternating), on one MobileNetV2-96 base."""
    import keras

    from modelhub.ml.assembly.manifest import AssemblyHead
    from modelhub.ml.assembly.trunk import AssemblyBranch
    from modelhub.ml.branches import cut_backbone, extract_branch
    from tests.branched_models import BRANCH_POINTS, build_branched_family

    tops = [1 + index % 2 for index in range(num_tasks)]
    family = build_branched_family(tops, size=96, alpha=1.0)
    family.base.save(work / "base.keras")
    heads = []
    for index, model in enumerate(family.models):
        layer = model.layers[-1]
        features = keras.Input(layer.input.shape[1:], name="features")
        model.layers[1].save(work / "tuned.keras")
        branch_model, info = extract_branch(work / "tuned.keras", BRANCH_POINTS[tops[index]], name=f"b{index}")
        branch = AssemblyBranch(info.after_layer, branch_model, f"{index:064x}", info.layers)
        head = keras.Model(features, layer(features), name=f"head{index}")
        heads.append(AssemblyHead(family.tasks[index], head, 1, "0" * 64, branch=branch))
    trunk = cut_backbone(work / "base.keras", {h.branch.after_layer for h in heads}, include_top=False)
    return family.base, heads, trunk, family.sample_inputs


def measure(backbone, heads, trunk, sample, work: Path, repeats: int, backbone_onnx: bool = True) -> dict:
    import numpy as np
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    from bench.common import interleaved_medians
    from modelhub.ml.assembly.build import build_assembly
    from modelhub.ml.export import export_assembly, open_onnx_runner
    from modelhub.ml.export.litert import LiteRunner

    saved = work / "assembly"
    start = time.perf_counter()
    build_assembly(backbone=backbone, heads=heads, export_dir=saved, backbone_info=INFO, trunk=trunk)
    build_s = time.perf_counter() - start
    reports = {}
    for fmt, quantization in (("onnx", "none"), ("litert", "none"), ("litert", "float16"), ("litert", "dynamic_int8")):
        reports[(fmt, quantization)] = export_assembly(
            backbone=backbone, heads=heads, trunk=trunk, saved_model_dir=saved, fmt=fmt,
            quantization=quantization, out_path=work / f"model-{quantization}.{fmt}",
        )  # fmt: skip
    serve = tf.saved_model.load(str(saved)).signatures["serving_default"]
    onnx = open_onnx_runner(work / "model-none.onnx")
    rng = np.random.default_rng(0)
    num = len(heads)
    batches = {
        "b1": (sample(1), rng.integers(0, num, 1)),
        "b32": (sample(32), rng.integers(0, num, 32)),
        "mixed": (sample(MIXED_BATCH), rng.choice(rng.permutation(num)[:MIXED_TASKS], MIXED_BATCH)),
    }
    calls = {}
    for key, (images, task_id) in batches.items():
        task_id = task_id.astype(np.int32)
        calls[f"saved_model_{key}"] = lambda i=images, t=task_id: serve(inputs=tf.constant(i), task_id=tf.constant(t))
        calls[f"onnx_{key}"] = lambda i=images, t=task_id: onnx.run({"inputs": i}, t)
    if backbone_onnx:
        spec = (tf.TensorSpec([None, *backbone.inputs[0].shape[1:]], tf.float32, "inputs"),)
        function = tf.function(lambda x: backbone(x, training=False), input_signature=spec)
        proto, _ = tf2onnx.convert.from_function(function, input_signature=spec, opset=17)
        alone = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        for key in ("b32", "mixed"):
            calls[f"onnx_backbone_{key}"] = lambda i=batches[key][0]: alone.run(None, {"inputs": i})
    for key, (images, task_id) in batches.items():
        for fmt, quantization in reports:
            if fmt == "litert" and key == "b1":
                runner = LiteRunner(work / f"model-{quantization}.litert", num_tasks=num, input_names=["inputs"])
                calls[f"litert_{quantization}_b1"] = lambda r=runner, i=images, t=task_id: r.run({"inputs": i}, t)
    times = interleaved_medians(calls, repeats, warmup=True)
    result = {f"{name}_ms": round(value * 1000, 3) for name, value in times.items()}
    for key in batches:
        result[f"onnx_speedup_{key}"] = times[f"saved_model_{key}"] / times[f"onnx_{key}"]
    if backbone_onnx:
        for key in ("b32", "mixed"):
            result[f"onnx_over_backbone_{key}"] = times[f"onnx_{key}"] / times[f"onnx_backbone_{key}"]
    result["build_s"] = build_s
    result["litert"] = {
        q: {"size_bytes": r["size_bytes"], "latency_ms": round(times[f"litert_{q}_b1"] * 1000, 3),
            "max_abs_diff": r["max_abs_diff"], "min_argmax_agreement": min(t["argmax_agreement"] for t in r["tasks"]),
            "export_over_build": r["export_seconds"] / build_s}
        for (fmt, q), r in reports.items() if fmt == "litert"
    }  # fmt: skip
    onnx_report = reports[("onnx", "none")]
    result["onnx"] = {"size_bytes": onnx_report["size_bytes"], "max_abs_diff": onnx_report["max_abs_diff"],
                      "export_over_build": onnx_report["export_seconds"] / build_s}  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", type=int, default=200)
    parser.add_argument("--branched-tasks", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    from bench.assembly import make_backbone

    with tempfile.TemporaryDirectory(prefix="bench-export-") as folder:
        work = Path(folder)
        (work / "dense").mkdir()
        backbone = make_backbone()

        def sample(rows: int, seed: int = 0):
            import numpy as np

            return np.random.default_rng(seed).uniform(0, 255, (rows, 96, 96, 3)).astype("float32")

        report = measure(backbone, dense_heads(args.heads), None, sample, work / "dense", args.repeats)
        print("dense:", json.dumps(report), flush=True)  # kept even when the branched part fails
        if args.branched_tasks:
            (work / "branched").mkdir()
            base, heads, trunk, sampler = branched_components(args.branched_tasks, work / "branched")
            try:
                report["branched"] = measure(base, heads, trunk, sampler, work / "branched", args.repeats, False)
            except Exception as exc:  # noqa: BLE001 - a bench reports what failed and goes on
                report["branched"] = {"error": f"{type(exc).__name__}: {exc}"}
    report["heads"] = args.heads
    print(json.dumps(report))


if __name__ == "__main__":
    main()
