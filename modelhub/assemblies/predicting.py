"""Trial predictions on an assembly: validated in the web process, computed by a worker.

The web side only checks shapes with NumPy; the worker loads the verified SavedModel (cached
per sha256) with plain TensorFlow and calls its serving_default signature.
"""

import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from modelhub.artifacts.services import blob_fetch_verified
from modelhub.assemblies.models import Assembly, Prediction
from modelhub.core.errors import ApplicationError, ConflictError, ValidationError
from modelhub.core.tracked_work import queue_on_commit, row_claim, row_finish

MAX_ROWS = 256


class PredictionTimeoutError(ApplicationError):
    status_code = 504
    code = "prediction_timeout"


def resolve_task(assembly: Assembly, *, task: str | None, task_id: int | None) -> dict:
    """Return the manifest entry chosen by task slug or task_id, or raise ValidationError."""
    heads = assembly.manifest.get("heads", [])
    for entry in heads:
        if (task is not None and entry["task"] == task) or (task is None and entry["task_id"] == task_id):
            return entry
    choices = ", ".join(f"{e['task_id']}={e['task']}" for e in heads)
    asked = f"task {task!r}" if task is not None else f"task_id {task_id}"
    raise ValidationError(f"Unknown {asked} for assembly {assembly.pk}. Valid tasks: {choices}.")


def coerce_inputs(assembly: Assembly, inputs) -> list:
    """Check `inputs` against the backbone input shape; add the batch axis for one example."""
    spec = assembly.manifest["backbone"]["input"]
    example_shape = spec["shape"][1:]
    try:
        array = np.asarray(inputs, dtype=spec["dtype"])
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"'inputs' must be a nested list of numbers ({spec['dtype']}): {exc}") from exc

    def fits(shape) -> bool:
        return len(shape) == len(example_shape) and all(
            e is None or e == s for e, s in zip(example_shape, shape, strict=False)
        )

    if fits(array.shape):
        array = array[None, ...]
    elif not (array.ndim == len(example_shape) + 1 and fits(array.shape[1:])):
        raise ValidationError(
            f"'inputs' has shape {list(array.shape)}; expected one example of shape {example_shape} or a batch "
            f"[rows, {', '.join(map(str, example_shape))}] (the backbone input)."
        )
    if not 1 <= array.shape[0] <= MAX_ROWS:
        raise ValidationError(f"Send between 1 and {MAX_ROWS} rows; received {array.shape[0]}.")
    if not np.all(np.isfinite(array)):
        raise ValidationError("'inputs' contains NaN or infinity.")
    return array.tolist()


def prediction_run_and_wait(
    *, assembly: Assembly, user: AbstractBaseUser, task: str | None, task_id: int | None, inputs
) -> Prediction:
    """Queue a prediction for a worker and wait for its answer (MODELHUB_PREDICT_TIMEOUT seconds)."""
    if assembly.status != Assembly.Status.READY:
        raise ConflictError(f"Assembly {assembly.pk} is '{assembly.status}'; predictions need a ready assembly.")
    entry = resolve_task(assembly, task=task, task_id=task_id)
    rows = coerce_inputs(assembly, inputs)
    with transaction.atomic():
        prediction = Prediction.objects.create(
            assembly=assembly, task_id=entry["task_id"], inputs=rows, created_by=user
        )
        queue_on_commit("assemblies.predict", prediction.pk)
    deadline = time.monotonic() + settings.MODELHUB_PREDICT_TIMEOUT
    while time.monotonic() < deadline:
        prediction.refresh_from_db()
        if prediction.status in (Prediction.Status.SUCCEEDED, Prediction.Status.FAILED):
            return prediction
        time.sleep(0.1)
    raise PredictionTimeoutError(
        f"No worker answered within {settings.MODELHUB_PREDICT_TIMEOUT}s (prediction {prediction.pk}); the "
        "assembly workers may be busy. Try again, or download the model and run it locally."
    )


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
    import tensorflow as tf

    prediction = row_claim(
        Prediction,
        prediction_id,
    )
    if prediction is None:
        return
    try:
        assembly = prediction.assembly
        model = tf.saved_model.load(str(_saved_model_dir(assembly)))
        spec = assembly.manifest["backbone"]["input"]
        inputs = tf.constant(np.asarray(prediction.inputs, dtype=spec["dtype"]))
        task_ids = tf.fill([int(inputs.shape[0])], tf.constant(prediction.task_id, tf.int32))
        result = model.signatures["serving_default"](inputs=inputs, task_id=task_ids)
        width = int(result["output_width"].numpy()[0])
        outputs = result["outputs"].numpy()[:, :width].tolist()
        row_finish(prediction, status=Prediction.Status.SUCCEEDED, outputs=outputs)
    except Exception as exc:
        row_finish(prediction, status=Prediction.Status.FAILED, error=f"{type(exc).__name__}: {exc}")
