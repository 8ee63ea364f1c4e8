"""Worker side of a trial prediction: the verified ONNX export when there is one, else the SavedModel.

When the assembly has a ready, verified ONNX export without quantization, ONNX Runtime answers
(its session kept open per sha256 in the worker); otherwise the SavedModel, extracted once per
sha256 under MODELHUB_HOME/cache/assemblies, is called with plain TensorFlow (imported inside the
function: the web process never loads it). Either way every backbone input goes by its serving
name plus task_id, the outputs are cut to the head's width, and the row records the runtime.
"""

import logging
from collections import OrderedDict

import numpy as np

from assemblies.inputs import SINGLE_INPUT_NAME, manifest_inputs
from assemblies.models import Assembly, Prediction
from assemblies.selectors import export_for_predictions
from assemblies.work.components import cached_blob_file, saved_model_dir
from core.tracked_work import row_finish, run_tracked

logger = logging.getLogger(__name__)
# ONNX Runtime sessions kept open in a worker process, by the export's sha256 (least recently used dropped).
MAX_OPEN_RUNNERS = 4
_runners: OrderedDict[str, object] = OrderedDict()


def prediction_compute(*, prediction_id: int) -> None:
    """Worker side: run the prediction (ONNX Runtime when a verified export exists, else TensorFlow)."""
    run_tracked(Prediction, prediction_id, _compute)


def _compute(prediction: Prediction) -> None:
    try:
        assembly = prediction.assembly
        specs = manifest_inputs(assembly.manifest)
        stored = prediction.inputs if isinstance(prediction.inputs, dict) else {SINGLE_INPUT_NAME: prediction.inputs}
        outputs, runtime = None, "tensorflow"
        export = export_for_predictions(assembly=assembly)
        if export is not None:
            try:
                outputs = _onnx_outputs(export, specs, stored, prediction.task_id)
                runtime = "onnxruntime"
            except Exception:  # a verified export that fails here: the SavedModel answers instead
                logger.exception("ONNX export %s failed on prediction %s; using TensorFlow", export.pk, prediction.pk)
        if outputs is None:
            outputs = _tensorflow_outputs(assembly, specs, stored, prediction.task_id)
        row_finish(prediction, status=Prediction.Status.SUCCEEDED, outputs=outputs, runtime=runtime)
    except Exception as exc:
        row_finish(prediction, status=Prediction.Status.FAILED, error=f"{type(exc).__name__}: {exc}")


def _onnx_outputs(export, specs: list[dict], stored: dict, task_id: int) -> list:
    """Run the verified ONNX export with ONNX Runtime; return the rows cut to the head's width."""
    runner = _runners.get(export.blob.sha256)
    if runner is None:
        from modelhub.ml.export import open_onnx_runner

        runner = open_onnx_runner(cached_blob_file(export.blob, kind="exports", suffix=".onnx"))
        _runners[export.blob.sha256] = runner
        while len(_runners) > MAX_OPEN_RUNNERS:
            _runners.popitem(last=False)
    _runners.move_to_end(export.blob.sha256)
    # The runner names the inputs as the export graph does; one input is one input whatever its name.
    names = list(getattr(runner, "input_names", None) or [])
    arrays = {}
    for spec in specs:
        values = stored[spec["name"]]
        name = names[0] if len(names) == len(specs) == 1 else spec["name"]
        arrays[name] = (
            np.asarray(values, dtype=object) if spec["dtype"] == "string" else np.asarray(values, dtype=spec["dtype"])
        )
    num_rows = len(next(iter(arrays.values())))
    outputs, width = runner.run(arrays, np.full([num_rows], task_id, dtype=np.int32))
    width = int(np.asarray(width).reshape(-1)[0])
    return np.asarray(outputs)[:, :width].tolist()


def _tensorflow_outputs(assembly: Assembly, specs: list[dict], stored: dict, task_id: int) -> list:
    """Call the SavedModel's serving_default with plain TensorFlow; return the rows cut to the head's width."""
    import tensorflow as tf

    model = tf.saved_model.load(str(saved_model_dir(assembly)))
    tensors = {}
    for spec in specs:
        dtype = tf.as_dtype(spec["dtype"])
        values = stored[spec["name"]]
        tensors[spec["name"]] = (
            tf.constant(values, tf.string)
            if dtype == tf.string
            else tf.constant(np.asarray(values, dtype=dtype.as_numpy_dtype))
        )
    num_rows = int(tensors[specs[0]["name"]].shape[0])
    task_ids = tf.fill([num_rows], tf.constant(task_id, tf.int32))
    result = model.signatures["serving_default"](**tensors, task_id=task_ids)
    width = int(result["output_width"].numpy()[0])
    return result["outputs"].numpy()[:, :width].tolist()
