"""ONNX: convert the export graph with tf2onnx (opset 17), quantize it, and run it with ONNX Runtime.

:func:`convert_onnx` fails with :class:`ExportError` naming the layer when tf2onnx leaves an op
unconverted (it logs and keeps the TensorFlow op, which ONNX Runtime then refuses) or raises.
:func:`open_onnx_runner` opens a written file for the trial predict and the verification; the
task table (slugs, widths) travels in the file's metadata, never as a hash table in the graph.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelhub.ml.errors import ExportError, InvalidTaskIdError
from modelhub.ml.export.graph import ExportGraph
from modelhub.ml.export.layers import blame

OPSET = 17
METADATA_KEY = "modelhub"


def convert_onnx(graph: ExportGraph, out_path: Path, *, owners: dict[str, str], tasks: Sequence[str]) -> None:
    """Write ``graph.serving`` as an ONNX model at ``out_path``."""
    import onnx
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    try:
        model, _ = tf2onnx.convert.from_function(
            graph.serving, input_signature=graph.serving.input_signature, opset=OPSET
        )
    except Exception as error:  # noqa: BLE001 - any converter failure is reported with its layer
        raise _conversion_error(str(error), owners) from error
    unknown = [node for node in _nodes(model.graph) if not _registered(onnx, node)]
    if unknown:
        node = unknown[0]
        where = blame([node.name, *node.input, *node.output], owners) or f"node '{node.name}'"
        raise ExportError(
            f"Cannot export to ONNX (opset {OPSET}): {where} uses the TensorFlow op {node.op_type}, which "
            "tf2onnx cannot convert. Replace that layer with one built from standard ops, or export to LiteRT."
        )
    metadata = {"tasks": list(tasks), "widths": graph.widths.tolist(), "inputs": graph.input_names}
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    out_path.write_bytes(model.SerializeToString())


# ONNX quantizations: "dynamic_int8" is ONNX Runtime's dynamic quantization (int8 weights of
# MatMul/Conv/Gather initializers, activations quantized per batch at run time); "float16" is the
# float16 converter ONNX Runtime ships (onnxruntime.transformers.float16, the onnxconverter-common
# code) with float32 inputs and outputs kept, so the contract (float32 ``outputs``) holds.
QUANTIZATIONS = ("none", "float16", "dynamic_int8")


def quantize_onnx(path: Path, quantization: str) -> None:
    """Quantize the ONNX file at ``path`` in place; the task table in its metadata is kept.

    Raises ExportError naming the quantization when ONNX Runtime's quantizer fails.
    """
    if quantization == "none":
        return
    if quantization not in QUANTIZATIONS:
        raise ExportError(f"Expected ONNX quantization one of {list(QUANTIZATIONS)}, received {quantization!r}.")
    import onnx

    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    staged = path.with_name(f"{path.name}.{quantization}")
    try:
        if quantization == "dynamic_int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(path), str(staged), weight_type=QuantType.QInt8)
            model = onnx.load(str(staged))
        else:
            from onnxruntime.transformers.float16 import convert_float_to_float16

            model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    except Exception as error:  # noqa: BLE001 - reported with the quantization, never a traceback
        first = (str(error).strip().splitlines() or ["failed"])[0][:300]
        raise ExportError(
            f"Cannot quantize the ONNX export to {quantization} with ONNX Runtime's quantizer ({first}). Export "
            "ONNX with quantization 'none', or LiteRT with this quantization."
        ) from error
    finally:
        if staged.exists():
            staged.unlink()
    metadata = {entry.key: entry.value for entry in model.metadata_props}
    if METADATA_KEY not in metadata:  # the quantizer keeps metadata_props today; make sure it travels
        original = {entry.key: entry.value for entry in onnx.load(str(path), load_external_data=False).metadata_props}
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, original[METADATA_KEY]
    path.write_bytes(model.SerializeToString())


def _conversion_error(text: str, owners: dict[str, str]) -> ExportError:
    where = blame([text], owners) or "a layer"
    first = text.strip().splitlines()[0][:300] if text.strip() else "conversion failed"
    return ExportError(f"Cannot export to ONNX (opset {OPSET}): {where} could not be converted by tf2onnx ({first}).")


def _nodes(graph: Any) -> list[Any]:
    found = []
    for node in graph.node:
        found.append(node)
        for attribute in node.attribute:
            if attribute.g is not None and attribute.g.node:
                found.extend(_nodes(attribute.g))
            for sub in attribute.graphs:
                found.extend(_nodes(sub))
    return found


def _registered(onnx: Any, node: Any) -> bool:
    domain = node.domain or ""
    if domain not in ("", "ai.onnx", "ai.onnx.ml"):
        return domain == "com.microsoft"  # contrib ops ONNX Runtime ships
    return bool(onnx.defs.has(node.op_type, domain))


class OnnxRunner:
    """An ONNX export opened in ONNX Runtime: ``run(inputs_by_name, task_id) -> (outputs, output_width)``.

    Attributes:
        input_names: the backbone's inputs, in order (``task_id`` comes on its own).
        tasks: the task slugs in task_id order; ``widths`` their output widths.
        runtime: "onnxruntime <version>".
    """

    def __init__(self, path: str | os.PathLike[str], *, threads: int = 0) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001
            first = (str(error).strip().splitlines() or [""])[0][:400]
            raise ExportError(f"Expected an ONNX export ONNX Runtime can open, '{path}' is not: {first}") from error
        metadata = json.loads(self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY, "{}"))
        self.input_names = [i.name for i in self.session.get_inputs() if i.name != "task_id"]
        self.tasks = list(metadata.get("tasks", []))
        self.widths = list(metadata.get("widths", []))
        self.runtime = f"onnxruntime {onnxruntime.__version__}"
        self._dtypes = {i.name: _NUMPY_TYPES.get(i.type, np.float32) for i in self.session.get_inputs()}

    def run(self, inputs_by_name: dict[str, Any], task_id: Any) -> tuple[np.ndarray, np.ndarray]:
        """Run rows; ``task_id`` is one int per row. Raises InvalidTaskIdError / ExportError on bad input."""
        feeds = check_feeds(inputs_by_name, task_id, self.input_names, len(self.tasks), self._dtypes)
        outputs, widths = self.session.run(["outputs", "output_width"], feeds)
        return outputs, widths


_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(int32)": np.int32, "tensor(int64)": np.int64}


def check_feeds(
    inputs_by_name: dict[str, Any], task_id: Any, names: Sequence[str], num_tasks: int, dtypes: dict[str, Any]
) -> dict[str, np.ndarray]:
    """Check the inputs (names, one row count) and task ids (range); return the feeds as arrays."""
    missing = sorted(set(names) - set(inputs_by_name))
    extra = sorted(set(inputs_by_name) - set(names))
    if missing or extra:
        raise ExportError(f"Expected inputs {list(names)} and task_id, missing {missing}, unexpected {extra}.")
    feeds = {name: np.asarray(inputs_by_name[name], dtype=dtypes.get(name, np.float32)) for name in names}
    task_id = np.asarray(task_id, np.int32).reshape(-1)
    rows = {int(array.shape[0]) for array in feeds.values()} if feeds else set()
    if rows != {len(task_id)}:
        raise ExportError(
            f"Expected one task_id per input row, received {len(task_id)} task ids for {sorted(rows)} rows."
        )
    if num_tasks and (task_id.size and (task_id.min() < 0 or task_id.max() >= num_tasks)):
        raise InvalidTaskIdError(
            f"task_id out of range: expected 0 <= task_id < {num_tasks}, received {task_id.tolist()[:10]}."
        )
    feeds["task_id"] = task_id
    return feeds


def open_onnx_runner(path: str | os.PathLike[str]) -> OnnxRunner:
    """Open an ONNX export for predictions (see :class:`OnnxRunner`)."""
    return OnnxRunner(path)
