"""LiteRT: convert the export graph with ``tf.lite.TFLiteConverter`` (builtin ops only) and run it.

The functions are saved as a SavedModel first (only their raw variables are tracked, so the
converter freezes them) and converted by signature key: ``serving_default`` and, when asked,
one signature per task slug. No Flex ops: a graph that needs one fails, naming the layer.
Quantization: ``none`` (float32), ``float16`` (weights stored as float16) or ``dynamic_int8``
(weights int8, activations quantized on the fly).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from modelhub.ml.assembly.manifest import SERVING_KEY
from modelhub.ml.errors import ExportError
from modelhub.ml.export.graph import ExportGraph
from modelhub.ml.export.layers import blame
from modelhub.ml.export.onnx import check_feeds

QUANTIZATIONS = ("none", "float16", "dynamic_int8")
METADATA_NAME = "modelhub"


def convert_litert(
    graph: ExportGraph, out_path: Path, *, quantization: str, owners: dict[str, str], tasks: list[str]
) -> None:
    """Write ``graph`` as a ``.tflite`` flatbuffer at ``out_path``."""
    signatures = {SERVING_KEY: graph.serving, **graph.per_task}
    staging = Path(tempfile.mkdtemp(prefix=".litert-", dir=out_path.parent))
    try:
        tf.saved_model.save(graph.module, str(staging / "saved"), signatures=signatures)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(staging / "saved"), signature_keys=list(signatures))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantization == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantization == "dynamic_int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        try:
            flatbuffer = converter.convert()
        except Exception as error:  # noqa: BLE001 - any converter failure is reported with its layer
            text = str(error)
            where = blame(text.splitlines(), owners) or "a layer"
            first = next((line for line in text.splitlines() if "not supported" in line or "error" in line), text)
            raise ExportError(
                f"Cannot export to LiteRT (builtin ops, quantization {quantization}): {where} could not be "
                f"converted ({first.strip()[:300]}). Replace that layer with one built from builtin ops, or "
                "export to ONNX."
            ) from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    out_path.write_bytes(flatbuffer)
    # The task table travels beside the model, as JSON (the graph has no hash table).
    sidecar(out_path).write_text(
        json.dumps({"tasks": tasks, "widths": graph.widths.tolist(), "inputs": graph.input_names})
    )


def sidecar(path: Path) -> Path:
    """The JSON file next to a ``.tflite`` export naming its tasks (slugs, widths, inputs)."""
    return Path(f"{path}.tasks.json")


class LiteRunner:
    """A LiteRT export in the ai_edge_litert interpreter: ``run(inputs_by_name, task_id)``; ``run_task``."""

    def __init__(self, path: str | os.PathLike[str], *, num_tasks: int, input_names: list[str]) -> None:
        from ai_edge_litert.interpreter import Interpreter

        try:
            self.interpreter = Interpreter(model_path=str(path))
        except Exception as error:  # noqa: BLE001
            raise ExportError(f"Expected a LiteRT export the interpreter can open, '{path}' is not: {error}") from error
        self.signatures = self.interpreter.get_signature_list()
        self.input_names = input_names
        self.num_tasks = num_tasks
        self.runtime = f"ai_edge_litert {_version()}"
        self._dtypes = {name: np.float32 for name in input_names}
        details = self.interpreter.get_signature_runner(SERVING_KEY).get_input_details()
        for name, detail in details.items():
            self._dtypes[name] = detail["dtype"]

    def run(self, inputs_by_name: dict[str, Any], task_id: Any) -> tuple[np.ndarray, np.ndarray]:
        feeds = check_feeds(inputs_by_name, task_id, self.input_names, self.num_tasks, self._dtypes)
        result = self.interpreter.get_signature_runner(SERVING_KEY)(**feeds)
        return np.asarray(result["outputs"]), np.asarray(result["output_width"])

    def run_task(self, task: str, inputs_by_name: dict[str, Any]) -> np.ndarray:
        if task not in self.signatures:
            raise ExportError(f"Expected a per-task signature '{task}', the export has {sorted(self.signatures)}.")
        feeds = {name: np.asarray(inputs_by_name[name], dtype=self._dtypes[name]) for name in self.input_names}
        return np.asarray(self.interpreter.get_signature_runner(task)(**feeds)["outputs"])


def _version() -> str:
    from importlib.metadata import version

    return version("ai-edge-litert")
