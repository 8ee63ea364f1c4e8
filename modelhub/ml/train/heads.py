"""Train heads on a backbone: cached features, several heads per run.

Heads train on cached backbone features whenever the backbone is frozen and no
augmentation is on; otherwise every batch runs the full forward pass, with the
backbone called in inference mode (``training=False``) so BatchNormalization keeps its
statistics. Several heads train in one run either jointly (one summed, weighted loss)
or disjointly (one optimizer and learning rate per head). Progress is reported per
epoch (validation metrics included), runs can be cancelled between batches, stop early
when the validation loss stops improving, and are seedable. A grown backbone trains
under a temporary classification head (:func:`train_grown_backbone`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from modelhub.ml.callbacks import CancelCheck, ProgressCallback, early_stopping
from modelhub.ml.errors import InvalidDatasetError, MLError, TrainingCancelled
from modelhub.ml.features import Inputs, cached_features, compute_features, is_string_array, keras_inputs
from modelhub.ml.train.model import check_xy, fit_callbacks, full_model, history_of, infer_loss, metrics_for


def train_head(
    *,
    backbone: keras.Model,
    head: keras.Model,
    x: Inputs,
    y: np.ndarray,
    epochs: int,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    loss: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    augment: keras.layers.Layer | None = None,
    seed: int | None = None,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    validation_data: tuple[Inputs, np.ndarray] | None = None,
    early_stopping_patience: int | None = None,
) -> dict[str, Any]:
    """Train ``head`` (in place) on ``backbone``'s features of ``x``.

    Args:
        backbone: the backbone; frozen unless some of its weights are trainable.
        head: the head to train.
        x, y: inputs (one array, or ``{input name: array}`` for any backbone; text as arrays of
            ``str``) and targets.
        epochs, batch_size, learning_rate: the usual.
        loss: a Keras loss name; inferred from the head's output activation when None.
        cache_dir: feature cache directory (used when the backbone is frozen).
        augment: an augmentation layer applied to inputs in training; forces full passes.
        seed: makes the run reproducible.
        progress: called after each epoch with ``{"epoch", "epochs", <metrics>}``, the
            validation metrics (``val_loss``, ``val_accuracy`` or ``val_mae``) included.
        should_cancel: polled before every batch; True raises ``TrainingCancelled``.
        validation_data: ``(x_val, y_val)`` evaluated after every epoch (through the cached
            features when the training uses them).
        early_stopping_patience: stop once ``val_loss`` has not improved for this many epochs
            (needs ``validation_data``; None trains every epoch).

    Returns:
        ``{"history": {metric: [per epoch]}, "used_feature_cache": bool, "cache": dict | None,
        "epochs_run": int, "stopped_early": bool}``.

    Example:
        >>> train_head(backbone=bb, head=head, x=images, y=labels, epochs=5)["history"]["loss"][-1]
    """
    check_xy(x, y)
    if validation_data is not None:
        check_xy(*validation_data)
    if early_stopping_patience and validation_data is None:
        raise MLError("Expected validation_data for early stopping (it watches val_loss), received none.")
    if seed is not None:
        keras.utils.set_random_seed(seed)
    loss = loss or infer_loss(head, y)
    frozen = not backbone.trainable_weights
    use_cache = frozen and augment is None
    cache_info = None
    callbacks = fit_callbacks(epochs, progress, should_cancel)
    stop = early_stopping(early_stopping_patience) if early_stopping_patience else None
    if stop is not None:
        callbacks.insert(0, stop)
    if use_cache:
        if cache_dir is not None:
            features, cache_info = cached_features(backbone, x, cache_dir=cache_dir)
        else:
            features = compute_features(backbone, x)
        validation = None
        if validation_data is not None:
            x_val = _cast_like(validation_data[0], x)
            if cache_dir is not None:
                val_features, _ = cached_features(backbone, x_val, cache_dir=cache_dir)
            else:
                val_features = compute_features(backbone, x_val)
            validation = (val_features, validation_data[1])
        head.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=metrics_for(loss))
        history = head.fit(
            features,
            y,
            epochs=epochs,
            batch_size=batch_size,
            verbose=0,
            callbacks=callbacks,
            validation_data=validation,
        )
    else:
        model = full_model(backbone, head, augment)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=metrics_for(loss))
        if validation_data is not None:
            validation_data = (keras_inputs(validation_data[0]), validation_data[1])
        history = model.fit(
            keras_inputs(x),
            y,
            epochs=epochs,
            batch_size=batch_size,
            verbose=0,
            callbacks=callbacks,
            validation_data=validation_data,
        )
    return {
        "history": history_of(history),
        "used_feature_cache": use_cache,
        "cache": cache_info,
        "epochs_run": len(history.history.get("loss", [])),
        "stopped_early": bool(stop is not None and stop.stopped_epoch),
    }


def train_heads(
    *,
    backbone: keras.Model,
    heads: Mapping[str, keras.Model],
    x: Inputs,
    ys: Mapping[str, np.ndarray],
    epochs: int,
    mode: str = "joint",
    batch_size: int = 32,
    learning_rates: float | Mapping[str, float] = 1e-3,
    loss_weights: Mapping[str, float] | None = None,
    losses: Mapping[str, str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    seed: int | None = None,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> dict[str, Any]:
    """Train several heads on one frozen backbone and one input set, in one run.

    Args:
        backbone: a frozen backbone (features are computed once).
        heads: task -> head model (trained in place).
        x: shared inputs; ys: task -> targets.
        epochs, batch_size: the usual.
        mode: ``"joint"``: one optimizer on the summed loss ``sum(w_t * loss_t)`` with
            ``learning_rates`` a float; ``"disjoint"``: one optimizer and learning rate per
            head, so heads do not compete through loss magnitudes.
        learning_rates: a float, or task -> rate (``"disjoint"``).
        loss_weights: task -> weight for ``"joint"`` (default 1 each).
        losses: task -> Keras loss name; inferred per head when missing.
        cache_dir, seed, progress, should_cancel: as in :func:`train_head`.

    Returns:
        ``{"history": {task: {metric: [per epoch]}}, "mode": str, "used_feature_cache": True}``.

    Example:
        >>> train_heads(backbone=bb, heads={"a": ha, "b": hb}, x=x, ys={"a": ya, "b": yb},
        ...             epochs=3, mode="disjoint", learning_rates={"a": 1e-3, "b": 1e-2})
    """
    if mode not in ("joint", "disjoint"):
        raise MLError(f"Expected mode 'joint' or 'disjoint', received '{mode}'.")
    if set(heads) != set(ys):
        raise InvalidDatasetError(f"Expected targets for every head {sorted(heads)}, received {sorted(ys)}.")
    for task in heads:
        check_xy(x, ys[task])
    if backbone.trainable_weights:
        raise MLError(
            f"Expected a frozen backbone for train_heads, '{backbone.name}' has trainable weights. "
            "Call freeze_backbone first, or use fine_tune for one head."
        )
    if seed is not None:
        keras.utils.set_random_seed(seed)
    if cache_dir is not None:
        features, _ = cached_features(backbone, x, cache_dir=cache_dir)
    else:
        features = compute_features(backbone, x)
    losses = {task: (losses or {}).get(task) or infer_loss(heads[task], ys[task]) for task in heads}
    rates = {task: float(learning_rates if np.isscalar(learning_rates) else learning_rates[task]) for task in heads}
    tasks = sorted(heads)
    if mode == "joint" and len(set(rates.values())) != 1:
        raise MLError("Expected one learning rate in joint mode; use mode='disjoint' for per-head rates.")
    weights = {task: float((loss_weights or {}).get(task, 1.0)) for task in tasks}
    history = _train_heads_loop(
        heads, tasks, features, ys, losses, rates, weights, mode, epochs, batch_size, seed, progress, should_cancel
    )
    result: dict[str, Any] = {"history": history, "mode": mode, "used_feature_cache": True}
    if mode == "disjoint":
        result["learning_rates"] = dict(rates)
    return result


def _cast_like(x_val: Inputs, x: Inputs) -> Inputs:
    """Return validation inputs with each numeric input cast to its training input's dtype."""

    def cast(value: np.ndarray, like: np.ndarray) -> np.ndarray:
        if is_string_array(value) or is_string_array(like):
            return np.asarray(value)
        return np.asarray(value).astype(np.asarray(like).dtype, copy=False)

    if isinstance(x_val, Mapping) and isinstance(x, Mapping):
        return {name: cast(value, x[name]) if name in x else value for name, value in x_val.items()}
    if isinstance(x_val, Mapping) or isinstance(x, Mapping):
        return x_val
    return cast(x_val, x)


def _train_heads_loop(
    heads: Mapping[str, keras.Model],
    tasks: list[str],
    features: np.ndarray,
    ys: Mapping[str, np.ndarray],
    losses: Mapping[str, str],
    rates: Mapping[str, float],
    weights: Mapping[str, float],
    mode: str,
    epochs: int,
    batch_size: int,
    seed: int | None,
    progress: ProgressCallback | None,
    should_cancel: CancelCheck | None,
) -> dict[str, Any]:
    """Train every head on cached features with ONE compiled step per batch.

    ``joint``: one optimizer on ``sum(w_t * loss_t)``. ``disjoint``: one optimizer and rate
    per head, each minimising its own loss, so heads do not compete through loss magnitudes.
    """
    import tensorflow as tf

    loss_fns = {task: keras.losses.get(losses[task]) for task in tasks}
    if mode == "joint":
        joint_optimizer = keras.optimizers.Adam(rates[tasks[0]])
        joint_variables = [v for task in tasks for v in heads[task].trainable_variables]
    else:
        optimizers = {task: keras.optimizers.Adam(rates[task]) for task in tasks}

    # One trace for every batch, the last (smaller) one included.
    signature = [
        tf.TensorSpec([None, *features.shape[1:]], tf.as_dtype(features.dtype)),
        tuple(
            tf.TensorSpec([None, *np.shape(ys[task])[1:]], tf.as_dtype(np.asarray(ys[task]).dtype)) for task in tasks
        ),
    ]

    @tf.function(input_signature=signature)
    def step(batch_x: Any, batch_ys: tuple) -> Any:
        with tf.GradientTape(persistent=mode == "disjoint") as tape:
            values = [
                tf.reduce_mean(loss_fns[task](batch_ys[i], heads[task](batch_x, training=True)))
                for i, task in enumerate(tasks)
            ]
            total = tf.add_n([weights[task] * values[i] for i, task in enumerate(tasks)])
        if mode == "joint":
            grads = tape.gradient(total, joint_variables)
            joint_optimizer.apply_gradients(zip(grads, joint_variables, strict=True))
        else:
            for i, task in enumerate(tasks):
                variables = heads[task].trainable_variables
                grads = tape.gradient(values[i], variables)
                optimizers[task].apply_gradients(zip(grads, variables, strict=True))
        return total, tf.stack(values)

    rng = np.random.default_rng(seed)
    history: dict[str, dict[str, list[float]]] = {"total": {"loss": []}, **{task: {"loss": []} for task in tasks}}
    for epoch in range(epochs):
        order = rng.permutation(len(features))
        total_sum, task_sums, num_batches = 0.0, np.zeros(len(tasks)), 0
        for batch_index, begin in enumerate(range(0, len(order), batch_size)):
            if should_cancel is not None and should_cancel():
                raise TrainingCancelled(f"Training was cancelled before batch {batch_index + 1}; nothing was saved.")
            rows = order[begin : begin + batch_size]
            total, values = step(features[rows], tuple(ys[task][rows] for task in tasks))
            total_sum += float(total)
            task_sums += values.numpy()
            num_batches += 1
        history["total"]["loss"].append(total_sum / max(num_batches, 1))
        for i, task in enumerate(tasks):
            history[task]["loss"].append(float(task_sums[i]) / max(num_batches, 1))
        if progress is not None:
            progress(
                {
                    "epoch": epoch + 1,
                    "epochs": epochs,
                    "loss": history["total"]["loss"][-1],
                    **{f"{task}_loss": history[task]["loss"][-1] for task in tasks},
                }
            )
    return history
