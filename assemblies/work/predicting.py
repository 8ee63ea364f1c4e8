"""Worker side of a trial prediction: load the verified SavedModel and call serving_default.

The SavedModel is extracted once per sha256 under MODELHUB_HOME/cache/assemblies and called with
plain TensorFlow (imported inside the function: the web process never loads it), with every
backbone input by its serving name plus task_id; the outputs are cut to the head's width.
"""

import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from django.conf import settings

from artifacts.services import blob_fetch_verified
from assemblies.inputs import SINGLE_INPUT_NAME, manifest_inputs
from assemblies.models import Assembly, Prediction
from core.tracked_work import row_finish, run_tracked


def _saved_model_dir(assembly: Assembly) -> Path:
    """Return a local, verified, extracted copy of the assembly (cached per sha256)."""
    cache = Path(settings.MODELHUB_HOME) / "cache" / "assemblies" / assembly.blob.sha256
    if (cache / "model" / "saved_model.pb").exists():
        return cache / "model"
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache.parent) as tmp:
        archive = blob_fetch_verified(blob=assembly.blob, destination=Path(tmp) / "model.zip")
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(Path(tmp) / "out")
        shutil.rmtree(cache, ignore_errors=True)
        (Path(tmp) / "out").rename(cache)
    return cache / "model"


def prediction_compute(*, prediction_id: int) -> None:
    """Worker side: run the prediction with plain TensorFlow and store outputs on the row."""
    run_tracked(Prediction, prediction_id, _compute)


def _compute(prediction: Prediction) -> None:
    import tensorflow as tf

    try:
        assembly = prediction.assembly
        model = tf.saved_model.load(str(_saved_model_dir(assembly)))
        specs = manifest_inputs(assembly.manifest)
        stored = prediction.inputs if isinstance(prediction.inputs, dict) else {SINGLE_INPUT_NAME: prediction.inputs}
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
        task_ids = tf.fill([num_rows], tf.constant(prediction.task_id, tf.int32))
        result = model.signatures["serving_default"](**tensors, task_id=task_ids)
        width = int(result["output_width"].numpy()[0])
        outputs = result["outputs"].numpy()[:, :width].tolist()
        row_finish(prediction, status=Prediction.Status.SUCCEEDED, outputs=outputs)
    except Exception as exc:
        row_finish(prediction, status=Prediction.Status.FAILED, error=f"{type(exc).__name__}: {exc}")
