"""Worker side of a trial prediction: the verified ONNX export when there is one, else the SavedModel.

When the assembly has a ready, verified ONNX export without quantization, ONNX Runtime answers
(its session kept open per sha256 in the worker); otherwise the SavedModel, extracted once per
sha256 under MODELHUB_HOME/cache/assemblies and loaded once per sha256 in the worker (the two
most recently used kept), is called with plain TensorFlow (imported inside the function: the web
process never loads it). Either way every backbone input goes by its serving name plus task_id
(one per row: a protocol's mixed batch runs in one call), each row is cut to its head's width,
and the row records the runtime.
"""

import logging
from collections import OrderedDict

import numpy as np

from assemblies.inputs import SINGLE_INPUT_NAME, TASK_ID_NAME, manifest_inputs
from assemblies.models import Assembly, Prediction
from assemblies.selectors import export_for_predictions
from assemblies.work.components import cached_blob_file, saved_model_dir
from core.tracked_work import row_finish, run_tracked

logger = logging.getLogger(__name__)
# ONNX Runtime sessions kept open in a worker process, by the export's sha256 (least recently used dropped).
MAX_OPEN_RUNNERS = 4
_runners: OrderedDict[str, object] = OrderedDict()
# Loaded SavedModels kept in a worker process, by the assembly blob's sha256 (a load takes seconds
# for thousands of heads; each kept one holds its variables in memory, so only a couple).
MAX_LOADED_MODELS = 2
_saved_models: OrderedDict[str, object] = OrderedDict()


def prediction_compute(*, prediction_id: int) -> None:
    """Worker side: run the prediction (ONNX Runtime when a verified export exists, else TensorFlow)."""
    run_tracked(Prediction, prediction_id, _compute)


def _compute(prediction: Prediction) -> None:
    try:
        assembly = prediction.assembly
        specs = manifest_inputs(assembly.manifest)
        stored = prediction.inputs if isinstance(prediction.inputs, dict) else {SINGLE_INPUT_NAME: prediction.inputs}
        num_rows = len(stored[specs[0]["name"]])
        # A protocol's mixed batch carries a task per row (assemblies.services.prediction_batch_create).
        task_ids = np.asarray(stored.get(TASK_ID_NAME, [prediction.task_id] * num_rows), dtype=np.int32).reshape(-1)
        outputs, runtime = None, "tensorflow"
        export = export_for_predictions(assembly=assembly)
        if export is not None:
            try:
                outputs = _onnx_outputs(export, specs, stored, task_ids)
                runtime = "onnxruntime"
            except Exception:  # a verified export that fails here: the SavedModel answers instead
                logger.exception("ONNX export %s failed on prediction %s; using TensorFlow", export.pk, prediction.pk)
        if outputs is None:
            outputs = _tensorflow_outputs(assembly, specs, stored, task_ids)
        row_finish(prediction, status=Prediction.Status.SUCCEEDED, outputs=outputs, runtime=runtime)
    except Exception as exc:
        row_finish(prediction, status=Prediction.Status.FAILED, error=f"{type(exc).__name__}: {exc}")


def _cut(outputs, widths) -> list:
    """Return each row cut to its own head's width (output_width, one per row)."""
    widths = np.asarray(widths).reshape(-1)
    return [row[: int(width)] for row, width in zip(np.asarray(outputs).tolist(), widths, strict=True)]


def _cached(cache: OrderedDict, key: str, limit: int, open_it):
    """Return cache[key], opening it with open_it() when absent; keep at most `limit`, least recently used dropped."""
    value = cache.get(key)
    if value is None:
        value = open_it()
        cache[key] = value
        while len(cache) > limit:
            cache.popitem(last=False)
    cache.move_to_end(key)
    return value


def _onnx_outputs(export, specs: list[dict], stored: dict, task_ids: np.ndarray) -> list:
    """Run the verified ONNX export with ONNX Runtime; return each row cut to its head's width."""

    def open_runner():
        from modelhub.ml.export import open_onnx_runner

        return open_onnx_runner(cached_blob_file(export.blob, kind="exports", suffix=".onnx"))

    runner = _cached(_runners, export.blob.sha256, MAX_OPEN_RUNNERS, open_runner)
    # The runner names the inputs as the export graph does; one input is one input whatever its name.
    names = list(getattr(runner, "input_names", None) or [])
    arrays = {}
    for spec in specs:
        values = stored[spec["name"]]
        name = names[0] if len(names) == len(specs) == 1 else spec["name"]
        arrays[name] = (
            np.asarray(values, dtype=object) if spec["dtype"] == "string" else np.asarray(values, dtype=spec["dtype"])
        )
    outputs, widths = runner.run(arrays, task_ids)
    return _cut(outputs, widths)


def saved_model_loaded(assembly: Assembly):
    """Return the assembly's loaded SavedModel, kept per blob sha256 in this worker (MAX_LOADED_MODELS)."""

    def load():
        import tensorflow as tf

        return tf.saved_model.load(str(saved_model_dir(assembly)))

    return _cached(_saved_models, assembly.blob.sha256, MAX_LOADED_MODELS, load)


def _tensorflow_outputs(assembly: Assembly, specs: list[dict], stored: dict, task_ids: np.ndarray) -> list:
    """Call the SavedModel's serving_default with plain TensorFlow; return each row cut to its head's width."""
    import tensorflow as tf

    model = saved_model_loaded(assembly)
    tensors = {}
    for spec in specs:
        dtype = tf.as_dtype(spec["dtype"])
        values = stored[spec["name"]]
        tensors[spec["name"]] = (
            tf.constant(values, tf.string)
            if dtype == tf.string
            else tf.constant(np.asarray(values, dtype=dtype.as_numpy_dtype))
        )
    result = model.signatures["serving_default"](**tensors, task_id=tf.constant(task_ids, tf.int32))
    return _cut(result["outputs"].numpy(), result["output_width"].numpy())
