"""Pieces the benchmarks share: realistic BatchNorm statistics, and the embedded-default environment."""

from __future__ import annotations

import os

# Variables that would point a started app away from the embedded default (or a bench's own servers).
EXTERNAL_ENV = (
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "PGHOST",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGPASSWORD",
    "MODELHUB_S3_BUCKET",
    "MODELHUB_S3_ENDPOINT_URL",
    "MODELHUB_ARTIFACT_ROOT",
    "DJANGO_SETTINGS_MODULE",
)


def embedded_env(**extra: str) -> dict[str, str]:
    """This process's environment without EXTERNAL_ENV, plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if key not in EXTERNAL_ENV}
    env.update(extra)
    return env


def randomize_batch_norm(model, *, seed: int = 0) -> None:
    """Give every BatchNormalization layer trained-looking, distinct statistics.

    ``weights=None`` models have gamma 1, beta 0, mean 0, variance 1 everywhere: many layers
    would then be identical and the network nearly constant, which trained models never are.
    """
    import keras
    import numpy as np

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [
                    gamma * rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                    beta + 0.1 * rng.standard_normal(beta.shape).astype("float32"),
                    0.1 * rng.standard_normal(mean.shape).astype("float32"),
                    var * rng.uniform(0.5, 2.0, var.shape).astype("float32"),
                ]
            )


def interleaved_medians(functions: dict, repeats: int, *, warmup: bool = False) -> dict:
    """Call each function ``repeats`` times, in turn, and return each one's median seconds."""
    import time

    import numpy as np

    if warmup:
        for function in functions.values():
            function()
    times: dict = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(values)) for name, values in times.items()}


def save_raw_saved_model(model, export_dir, input_shape) -> None:
    """A SavedModel of one Keras model stored like an assembly (raw variables, one signature)."""
    import tensorflow as tf

    module = tf.Module()
    module.variables_list = [v.value for v in model.variables]
    spec = tf.TensorSpec([None, *input_shape], tf.float32, "inputs")

    @tf.function(input_signature=[spec])
    def serve(inputs):
        return {"outputs": model(inputs, training=False)}

    tf.saved_model.save(module, str(export_dir), signatures={"serving_default": serve})
