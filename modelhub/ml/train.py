"""Train heads on a backbone: cached features, several heads per run, fine-tuning.

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
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np

from modelhub.ml.callbacks import CancelCheck, ProgressAndCancel, ProgressCallback, early_stopping
from modelhub.ml.errors import InvalidDatasetError, MLError, TrainingCancelled
from modelhub.ml.features import cached_features, compute_features
from modelhub.ml.freeze import freeze_backbone, unfreeze_top
from modelhub.ml.inspect import copy_model

HEAD_KINDS = ("dense", "mlp")
HEAD_ACTIVATIONS = ("linear", "softmax", "sigmoid")


def build_head(
    feature_shape: Sequence[int],
    *,
    units: int,
    kind: str = "dense",
    activation: str = "softmax",
    hidden_units: Sequence[int] = (),
    dropout: float = 0.0,
    name: str = "head",
    seed: int | None = None,
) -> keras.Model:
    """Build a head whose single input (named ``"features"``) has ``feature_shape``.

    Args:
        feature_shape: the backbone's feature shape without batch; >1-D features are flattened.
        units: output width.
        kind: ``"dense"`` (one Dense layer) or ``"mlp"`` (hidden Dense+ReLU layers, dropout).
        activation: ``"linear"`` (regression), ``"softmax"`` or ``"sigmoid"``.
        hidden_units: hidden layer sizes for ``"mlp"``.
        dropout: dropout rate after each hidden layer.
        name: model name.
        seed: seeds the initialisers.

    Returns:
        An uncompiled ``keras.Model``.

    Example:
        >>> build_head([1280], units=10, kind="mlp", hidden_units=[64], dropout=0.2)
    """
    if kind not in HEAD_KINDS:
        raise MLError(f"Expected head kind in {HEAD_KINDS}, received '{kind}'.")
    if activation not in HEAD_ACTIVATIONS:
        raise MLError(f"Expected activation in {HEAD_ACTIVATIONS}, received '{activation}'.")
    if kind == "mlp" and not hidden_units:
        raise MLError("Expected hidden_units (e.g. [64]) for an 'mlp' head, received none.")
    if seed is not None:
        keras.utils.set_random_seed(seed)
    inputs = keras.Input(tuple(feature_shape), name="features")
    x = keras.layers.Flatten(name="flatten")(inputs) if len(feature_shape) > 1 else inputs
    if kind == "mlp":
        for index, width in enumerate(hidden_units):
            x = keras.layers.Dense(int(width), activation="relu", name=f"hidden_{index}")(x)
            if dropout:
                x = keras.layers.Dropout(dropout, name=f"dropout_{index}")(x)
    outputs = keras.layers.Dense(units, activation=activation, name="output")(x)
    return keras.Model(inputs, outputs, name=name)


def feature_shape(backbone: keras.Model) -> tuple[int, ...]:
    """Return the shape of one row of the backbone's features (its first output, without batch).

    Example:
        >>> build_head(feature_shape(backbone), units=3)
    """
    return tuple(backbone.outputs[0].shape[1:])


def train_head(
    *,
    backbone: keras.Model,
    head: keras.Model,
    x: np.ndarray,
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
    validation_data: tuple[np.ndarray, np.ndarray] | None = None,
    early_stopping_patience: int | None = None,
) -> dict[str, Any]:
    """Train ``head`` (in place) on ``backbone``'s features of ``x``.

    Args:
        backbone: the backbone; frozen unless some of its weights are trainable.
        head: the head to train.
        x, y: inputs and targets.
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
    _check_xy(x, y)
    if validation_data is not None:
        _check_xy(*validation_data)
    if early_stopping_patience and validation_data is None:
        raise MLError("Expected validation_data for early stopping (it watches val_loss), received none.")
    if seed is not None:
        keras.utils.set_random_seed(seed)
    loss = loss or infer_loss(head, y)
    frozen = not backbone.trainable_weights
    use_cache = frozen and augment is None
    cache_info = None
    callbacks = _callbacks(epochs, progress, should_cancel)
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
            x_val = np.asarray(validation_data[0]).astype(np.asarray(x).dtype, copy=False)
            if cache_dir is not None:
                val_features, _ = cached_features(backbone, x_val, cache_dir=cache_dir)
            else:
                val_features = compute_features(backbone, x_val)
            validation = (val_features, validation_data[1])
        head.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=_metrics(loss))
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
        model = _full_model(backbone, head, augment)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=_metrics(loss))
        history = model.fit(
            x,
            y,
            epochs=epochs,
            batch_size=batch_size,
            verbose=0,
            callbacks=callbacks,
            validation_data=validation_data,
        )
    return {
        "history": _history(history),
        "used_feature_cache": use_cache,
        "cache": cache_info,
        "epochs_run": len(history.history.get("loss", [])),
        "stopped_early": bool(stop is not None and stop.stopped_epoch),
    }


def train_heads(
    *,
    backbone: keras.Model,
    heads: Mapping[str, keras.Model],
    x: np.ndarray,
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
        _check_xy(x, ys[task])
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


def fine_tune(
    *,
    backbone: keras.Model,
    head: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    phase1_epochs: int,
    phase2_epochs: int,
    unfreeze_layers: int,
    learning_rate: float = 1e-3,
    phase2_lr_factor: float = 0.1,
    batch_size: int = 32,
    loss: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    seed: int | None = None,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> dict[str, Any]:
    """Two-phase fine-tune: head on a frozen backbone, then the top layers at a lower rate.

    ``backbone`` itself is never modified; the changed backbone is returned as a new model.

    Args:
        backbone, head, x, y: as in :func:`train_head` (``head`` is trained in place).
        phase1_epochs: epochs with the backbone frozen (cached features).
        phase2_epochs: epochs with the top ``unfreeze_layers`` weight-bearing layers unfrozen.
        unfreeze_layers: N weight-bearing layers to unfreeze in phase 2.
        learning_rate: phase-1 rate; phase 2 uses ``learning_rate * phase2_lr_factor``.
        phase2_lr_factor: defaults to 0.1.

    Returns:
        ``{"backbone": keras.Model, "backbone_weights": [np.ndarray], "head": keras.Model,
        "history": {"phase1": ..., "phase2": ...}, "unfreeze": dict, "phase2_learning_rate": float}``.

    Example:
        >>> result = fine_tune(backbone=bb, head=h, x=x, y=y, phase1_epochs=3,
        ...                    phase2_epochs=2, unfreeze_layers=4)
    """
    if seed is not None:
        keras.utils.set_random_seed(seed)
    tuned = copy_model(backbone)
    freeze_backbone(tuned)

    def report(phase: str) -> ProgressCallback | None:
        if progress is None:
            return None
        return lambda metrics: progress({"phase": phase, **metrics})

    phase1 = train_head(
        backbone=tuned,
        head=head,
        x=x,
        y=y,
        epochs=phase1_epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        loss=loss,
        cache_dir=cache_dir,
        progress=report("phase1"),
        should_cancel=should_cancel,
    )
    unfreeze = unfreeze_top(tuned, unfreeze_layers)
    phase2_rate = learning_rate * phase2_lr_factor
    loss = loss or infer_loss(head, y)
    model = _full_model(tuned, head, None)
    model.compile(optimizer=keras.optimizers.Adam(phase2_rate), loss=loss, metrics=_metrics(loss))
    history = model.fit(
        x,
        y,
        epochs=phase2_epochs,
        batch_size=batch_size,
        verbose=0,
        callbacks=_callbacks(phase2_epochs, report("phase2"), should_cancel),
    )
    return {
        "backbone": tuned,
        "backbone_weights": tuned.get_weights(),
        "head": head,
        "history": {"phase1": phase1["history"], "phase2": _history(history)},
        "unfreeze": unfreeze,
        "phase2_learning_rate": phase2_rate,
    }


def evaluate_head(
    backbone: keras.Model, head: keras.Model, x: np.ndarray, y: np.ndarray, *, batch_size: int = 64
) -> dict[str, float]:
    """Evaluate ``head`` through ``backbone`` on ``(x, y)`` (inference mode).

    Returns:
        ``{"loss": float, "num_examples": int}`` plus ``"accuracy"`` for softmax/sigmoid
        heads or ``"mae"`` for linear heads.

    Example:
        >>> evaluate_head(new_backbone, head, x_val, y_val)["accuracy"]
    """
    return evaluate_head_outputs(backbone, head, x, y, batch_size=batch_size)[0]


def evaluate_head_outputs(
    backbone: keras.Model,
    head: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int = 64,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[dict[str, float], np.ndarray]:
    """Evaluate ``head`` through a frozen ``backbone`` on ``(x, y)``; return its metrics and outputs.

    Args:
        backbone, head: the models (the backbone runs in inference mode).
        x, y: inputs and targets (class ids, one-hot rows, or values of the head's width).
        batch_size: rows per forward pass.
        cache_dir: when given, backbone features are read from / written to this feature cache.

    Returns:
        ``(metrics, outputs)``: metrics as :func:`evaluate_head` returns them, and the head's
        float32 outputs ``[len(x), width]``.

    Example:
        >>> metrics, outputs = evaluate_head_outputs(bb, head, x_val, y_val)
        >>> metrics["accuracy"] == np.mean(outputs.argmax(1) == y_val)
    """
    _check_xy(x, y)
    if cache_dir is not None:
        features = cached_features(backbone, x, cache_dir=cache_dir, batch_size=batch_size)[0]
    else:
        features = compute_features(backbone, x, batch_size=batch_size)
    outputs = np.asarray(head.predict(features, batch_size=batch_size, verbose=0), np.float32)
    outputs = outputs.reshape(len(x), -1)
    _check_targets(outputs, np.asarray(y))
    predictions = outputs.astype(np.float64)
    loss_name = infer_loss(head, y)
    loss_value = float(np.mean(np.asarray(keras.losses.get(loss_name)(y, predictions))))
    result: dict[str, float] = {"loss": loss_value, "num_examples": int(len(x))}
    if loss_name == "sparse_categorical_crossentropy":
        result["accuracy"] = float(np.mean(np.argmax(predictions, axis=-1) == np.asarray(y).reshape(-1)))
    elif loss_name == "categorical_crossentropy":
        result["accuracy"] = float(np.mean(np.argmax(predictions, -1) == np.argmax(y, -1)))
    elif loss_name == "binary_crossentropy":
        result["accuracy"] = float(np.mean((predictions > 0.5) == (np.asarray(y).reshape(predictions.shape) > 0.5)))
    else:
        result["mae"] = float(np.mean(np.abs(predictions - np.asarray(y).reshape(predictions.shape))))
    return result, outputs


def _check_targets(outputs: np.ndarray, y: np.ndarray) -> None:
    """Raise unless targets fit a head's outputs: class ids below its width, or rows of its width."""
    width = outputs.shape[1]
    if np.issubdtype(y.dtype, np.integer) and y.ndim == 1:
        if width > 1 and (y.min() < 0 or y.max() >= width):
            raise InvalidDatasetError(
                f"Expected class ids in 0..{width - 1} for a head with {width} outputs, received labels "
                f"{int(y.min())}..{int(y.max())}. Evaluate it on a dataset with at most {width} classes."
            )
        return
    if y.reshape(len(y), -1).shape[1] != width:
        raise InvalidDatasetError(
            f"Expected targets of {width} values per row for a head with {width} outputs, received "
            f"{y.reshape(len(y), -1).shape[1]}. Evaluate it on a dataset whose targets match its outputs."
        )


def head_validation_metrics(head: keras.Model, features: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Score a head on precomputed backbone features: the metrics a run reports as ``val_*``.

    Integer targets are class ids (cross-entropy loss and accuracy); other targets are values
    (mean squared error and mean absolute error).

    Returns:
        ``{"val_loss", "val_accuracy"}`` for class ids, ``{"val_loss", "val_mae"}`` for values.

    Example:
        >>> head_validation_metrics(head, cached_features(bb, x_val, cache_dir=d)[0], y_val)
    """
    _check_xy(features, y)
    predictions = np.asarray(head(features, training=False))
    y = np.asarray(y)
    if np.issubdtype(y.dtype, np.integer):
        probabilities = np.clip(predictions[np.arange(len(y)), y], 1e-7, 1.0)
        return {
            "val_loss": float(-np.mean(np.log(probabilities))),
            "val_accuracy": float(np.mean(predictions.argmax(axis=1) == y)),
        }
    error = predictions.reshape(len(y), -1) - y.astype(np.float32).reshape(len(y), -1)
    return {"val_loss": float(np.mean(error**2)), "val_mae": float(np.mean(np.abs(error)))}


def train_grown_backbone(
    *,
    backbone: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    epochs: int,
    batch_size: int = 32,
    learning_rate: float = 1e-4,
    seed: int | None = 0,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> dict[str, Any]:
    """Train a grown backbone's trainable layers (in place) under a temporary classification head.

    The backbone runs in inference mode (BatchNormalization keeps its statistics); which of its
    layers train is what ``grow_model(train=...)`` left trainable. The probe head is discarded.

    Args:
        backbone: the grown backbone (``grow_model(...)["model"]``).
        x, y: inputs and integer class ids ``0..num_classes-1``.
        num_classes: the probe head's output width.
        epochs, batch_size, learning_rate, seed, progress, should_cancel: as in :func:`train_head`.

    Returns:
        ``{"history": {metric: [per epoch]}}``.

    Example:
        >>> grown = grow_model(bb, kind="dense_identity", after="hidden", train="new")["model"]
        >>> train_grown_backbone(backbone=grown, x=x, y=y, num_classes=3, epochs=2)
    """
    _check_xy(x, y)
    if not np.issubdtype(np.asarray(y).dtype, np.integer):
        raise InvalidDatasetError(
            f"Expected integer class ids to train a grown backbone, received targets of dtype {np.asarray(y).dtype}."
        )
    probe = build_head(feature_shape(backbone), units=num_classes, activation="softmax", name="probe", seed=seed)
    model = _full_model(backbone, probe, None)
    loss = "sparse_categorical_crossentropy"
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=_metrics(loss))
    history = model.fit(
        x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=_callbacks(epochs, progress, should_cancel)
    )
    return {"history": _history(history)}


def make_trainable(model: keras.Model) -> None:
    """Make every layer of ``model`` trainable again, so a saved backbone carries no freeze state.

    Example:
        >>> make_trainable(fine_tune(...)["backbone"])
    """
    model.trainable = True
    for layer in model.layers:
        layer.trainable = True


def infer_loss(head: keras.Model, y: np.ndarray) -> str:
    """Return the Keras loss name matching the head's output activation and targets."""
    last = head.layers[-1]
    activation = keras.activations.serialize(getattr(last, "activation", keras.activations.linear))
    if activation == "softmax":
        return "sparse_categorical_crossentropy" if np.ndim(y) == 1 else "categorical_crossentropy"
    if activation == "sigmoid":
        return "binary_crossentropy"
    return "mse"


def _callbacks(epochs: int, progress: ProgressCallback | None, should_cancel: CancelCheck | None) -> list:
    return [ProgressAndCancel(epochs, progress, should_cancel)]


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


def _full_model(backbone: keras.Model, head: keras.Model, augment: keras.layers.Layer | None) -> keras.Model:
    spec = backbone.inputs[0]
    inputs = keras.Input(tuple(spec.shape[1:]), dtype=spec.dtype, name="inputs")
    x = augment(inputs) if augment is not None else inputs
    features = InferenceMode(backbone)(x)
    return keras.Model(inputs, head(features))


class _TaskHead(keras.layers.Layer):
    """Give a head a unique name inside a multi-head model (heads are often all named 'head')."""

    def __init__(self, head: keras.Model, task: str, **kwargs: Any) -> None:
        super().__init__(name=task, **kwargs)
        self.head = head

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        return self.head(inputs, training=training)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.head.compute_output_shape(input_shape)


class InferenceMode(keras.layers.Layer):
    """Call a backbone with ``training=False`` always, while its weights stay trainable.

    Keras 3 overrides ``training=False`` given at functional-graph construction when the
    outer model is fit, so unfrozen BatchNormalization would update its statistics. This
    wrapper keeps BatchNormalization (and Dropout) in inference mode during fine-tuning.
    """

    def __init__(self, backbone: keras.Model, **kwargs: Any) -> None:
        super().__init__(name=f"{backbone.name}_inference", **kwargs)
        self.backbone = backbone

    def call(self, inputs: Any) -> Any:
        return self.backbone(inputs, training=False)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.backbone.compute_output_shape(input_shape)


def _metrics(loss: str) -> list[str]:
    return ["accuracy"] if "crossentropy" in loss else ["mae"]


def _history(history: Any) -> dict[str, list[float]]:
    return {key: [float(v) for v in values] for key, values in history.history.items()}


def _check_xy(x: np.ndarray, y: np.ndarray) -> None:
    if len(x) != len(y):
        raise InvalidDatasetError(
            f"Expected as many targets as inputs, received {len(x)} inputs and {len(y)} targets. "
            "Check the dataset's label column."
        )
    if len(x) == 0:
        raise InvalidDatasetError("Expected at least one example, received an empty dataset.")
