"""The entry point: export a verified assembly to ONNX or LiteRT, verified against its SavedModel.

:func:`export_assembly` checks the request, builds the export graph from the components
(:mod:`.graph`), converts it (:mod:`.onnx`, :mod:`.litert`), runs the verification batch through
the SavedModel and the export (:mod:`.verify`), and only then moves the file to ``out_path``.
"""

from __future__ import annotations

import gc
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from modelhub.ml.assembly.manifest import MANIFEST_PATH, AssemblyHead
from modelhub.ml.branches import Trunk
from modelhub.ml.errors import ExportError
from modelhub.ml.export import verify
from modelhub.ml.export.graph import build_export_graph, check_exportable
from modelhub.ml.export.layers import layer_owners
from modelhub.ml.export.litert import QUANTIZATIONS, LiteRunner, convert_litert, sidecar
from modelhub.ml.export.onnx import OPSET, OnnxRunner, convert_onnx, quantize_onnx
from modelhub.ml.tolerance import VERIFY_TOLERANCE

FORMATS = ("onnx", "litert")


def export_assembly(
    *,
    backbone: keras.Model,
    heads: Sequence[AssemblyHead],
    trunk: Trunk | None,
    saved_model_dir: str | os.PathLike[str],
    fmt: str,
    quantization: str,
    out_path: str | os.PathLike[str],
    probe_inputs: Any = None,
    dataset: tuple[Any, Any] | None = None,
    progress: Callable[[float, str], None] | None = None,
    per_task_signatures: bool | None = None,
) -> dict[str, Any]:
    """Export the assembly at ``saved_model_dir`` (built from these components) and verify it.

    Args:
        backbone, heads, trunk: the components the assembly was built from (task_id order).
        saved_model_dir: the assembled SavedModel (its manifest names tasks and widths).
        fmt: "onnx" or "litert". quantization: "none", "float16" or "dynamic_int8" (both formats;
            ONNX is quantized by ONNX Runtime's quantizers, LiteRT by the TFLite converter).
        out_path: where the file goes, only once verified (LiteRT also writes ``<out>.tasks.json``).
        probe_inputs: rows for the verification batch; deterministic ones when None.
        dataset: ``(inputs, {task slug: labels or None})`` to report argmax agreement on.
        progress: ``progress(fraction, message)``.
        per_task_signatures: LiteRT also gets one signature per task slug; None follows the
            assembly's manifest.

    Returns:
        ``{"format", "quantization", "size_bytes", "runtime", "rtol", "max_abs_diff", "passed",
        "within_tolerance", "only_present_tasks", "notes", "tasks": [...], "dataset", "signatures", "export_seconds"}``.

    Raises:
        ExportError: a bad format or quantization, string inputs, a layer the converter cannot
            handle (named with the format), or an export off the SavedModel (``none``).
    """
    started = time.perf_counter()
    report_progress = progress or (lambda fraction, message: None)
    if fmt not in FORMATS:
        raise ExportError(f"Expected format one of {list(FORMATS)}, received {fmt!r}.")
    if quantization not in QUANTIZATIONS:
        raise ExportError(f"Expected quantization one of {list(QUANTIZATIONS)}, received {quantization!r}.")
    manifest_path = Path(saved_model_dir) / MANIFEST_PATH
    if not manifest_path.is_file():
        raise ExportError(f"Expected an assembled SavedModel with {MANIFEST_PATH} at '{saved_model_dir}'.")
    manifest = json.loads(manifest_path.read_text())
    tasks = [entry["task"] for entry in manifest["heads"]]
    widths = [int(entry["output_width"]) for entry in manifest["heads"]]
    if tasks != [head.task for head in heads]:
        raise ExportError("Expected the heads in the assembly's task order (its manifest), they differ.")
    if per_task_signatures is None:
        per_task_signatures = bool(manifest["serving"].get("per_head_signatures", False))
    per_task_signatures = per_task_signatures and fmt == "litert"
    check_exportable(backbone, heads, _label(fmt))

    report_progress(0.05, "building the export graph")
    graph = build_export_graph(
        backbone=backbone, heads=heads, trunk=trunk, widths=widths, per_task_signatures=per_task_signatures
    )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    staging = out_path.with_name(f".{out_path.name}.partial")
    owners = layer_owners(backbone, heads, trunk)
    report_progress(0.15, f"converting to {_label(fmt)}")
    try:
        if fmt == "onnx":
            convert_onnx(graph, staging, owners=owners, tasks=tasks)
            if quantization != "none":
                report_progress(0.5, f"quantizing the ONNX export ({quantization})")
                quantize_onnx(staging, quantization)
            runner: Any = OnnxRunner(staging)
        else:
            convert_litert(graph, staging, quantization=quantization, owners=owners, tasks=tasks)
            runner = LiteRunner(staging, num_tasks=len(tasks), input_names=graph.input_names)
        notes = list(graph.notes)
        del graph
        gc.collect()

        report_progress(0.6, "verifying against the SavedModel")
        inputs, task_of_row = verify.verification_batch(backbone, heads, probe_inputs)
        expected, _ = verify.saved_model_outputs(str(saved_model_dir), inputs, task_of_row)
        try:
            got, got_widths = verify.in_chunks(
                lambda rows: runner.run({n: a[rows] for n, a in inputs.items()}, task_of_row[rows]), len(task_of_row)
            )
        except RuntimeError as exc:  # the runtime refuses the converted graph (e.g. XNNPACK cannot prepare it)
            raise ExportError(
                f"The {_label(fmt)} runtime could not run this export on the verification batch: {exc}. Nothing is "
                "offered. Assemblies whose heads own many branches hit this in LiteRT today (each branch runs on its "
                "own rows); export fewer branched tasks per assembly, or use the SavedModel."
            ) from exc
        checked = verify.compare(
            fmt=fmt,
            quantization=quantization,
            tasks=tasks,
            widths=widths,
            task_of_row=task_of_row,
            expected=expected,
            got=got,
            got_widths=got_widths,
        )
        signatures = ["serving_default"]
        if per_task_signatures:
            signatures += _check_task_signatures(runner, inputs, task_of_row, expected, tasks, widths, quantization)
        dataset_report = None
        if dataset is not None:
            report_progress(0.85, "argmax agreement on the dataset")
            dataset_report = verify.dataset_agreement(
                run_export=runner.run,
                saved_model_dir=str(saved_model_dir),
                backbone=backbone,
                dataset=dataset,
                tasks=tasks,
                widths=widths,
            )
        runtime = runner.runtime
        runner = None  # the file is closed before it moves
        os.replace(staging, out_path)
    finally:
        if staging.exists():
            staging.unlink()
    if fmt == "litert":
        os.replace(sidecar(staging), sidecar(out_path))
    notes.append(
        f"Verified on {len(task_of_row)} rows over {len(set(task_of_row.tolist()))} of {len(tasks)} tasks "
        "(serving_default of the SavedModel vs the export)."
    )
    if fmt == "onnx":
        notes.append(
            f"ONNX opset {OPSET}, {_ONNX_WEIGHTS[quantization]}; task slugs and widths in the model's metadata_props."
        )
    else:
        notes.append("LiteRT builtin ops only; task slugs and widths in <file>.tasks.json beside the model.")
    report_progress(1.0, "done")
    return {
        "format": fmt,
        "quantization": quantization,
        "size_bytes": out_path.stat().st_size,
        "runtime": runtime,
        "rtol": VERIFY_TOLERANCE,
        "max_abs_diff": checked["max_abs_diff"],
        "passed": checked["passed"],
        "within_tolerance": checked["within_tolerance"],
        "only_present_tasks": True,
        "notes": notes,
        "tasks": checked["tasks"],
        "dataset": dataset_report,
        "signatures": signatures,
        "export_seconds": time.perf_counter() - started,
    }


_ONNX_WEIGHTS = {
    "none": "float32",
    "float16": "float16 weights and compute (float32 inputs and outputs; ONNX Runtime's float16 converter)",
    "dynamic_int8": "int8 weights, activations quantized per batch (ONNX Runtime's quantize_dynamic)",
}


def _label(fmt: str) -> str:
    return {"onnx": "ONNX", "litert": "LiteRT"}.get(fmt, fmt)


def _check_task_signatures(
    runner: LiteRunner,
    inputs: dict[str, np.ndarray],
    task_of_row: np.ndarray,
    expected: np.ndarray,
    tasks: Sequence[str],
    widths: Sequence[int],
    quantization: str,
) -> list[str]:
    """Run each covered task's signature on its rows; ``none`` must match the SavedModel."""
    for task_id in sorted(set(task_of_row.tolist())):
        rows = np.flatnonzero(task_of_row == task_id)
        got = runner.run_task(tasks[task_id], {n: a[rows] for n, a in inputs.items()})
        reference = expected[rows, : widths[task_id]]
        diff = float(np.max(np.abs(reference - got))) if got.shape == reference.shape else float("inf")
        scale = max(1.0, float(np.max(np.abs(reference))))
        if quantization == "none" and not diff <= VERIFY_TOLERANCE * scale:
            raise ExportError(
                f"Expected the LiteRT signature '{tasks[task_id]}' to reproduce the SavedModel within "
                f"{VERIFY_TOLERANCE * scale:.3g}, max abs diff is {diff:.3g} (shape {list(got.shape)})."
            )
    return list(tasks)
