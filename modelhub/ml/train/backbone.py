"""Train a backbone: fine-tune it with a head, or train a grown backbone under a temporary head.

Fine-tuning trains the head on frozen features first, then unfreezes the top layers and trains
both with the backbone in inference mode (BatchNormalization keeps its statistics).
"""

from __future__ import annotations

import os
from typing import Any

import keras
import numpy as np

from modelhub.ml.callbacks import CancelCheck, ProgressCallback
from modelhub.ml.errors import InvalidDatasetError
from modelhub.ml.features import Inputs, keras_inputs
from modelhub.ml.freeze import freeze_backbone, unfreeze_top
from modelhub.ml.inspect import copy_model
from modelhub.ml.train.heads import train_head
from modelhub.ml.train.model import (
    build_head,
    check_xy,
    feature_shape,
    fit_callbacks,
    full_model,
    history_of,
    infer_loss,
    metrics_for,
)


def fine_tune(
    *,
    backbone: keras.Model,
    head: keras.Model,
    x: Inputs,
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
    model = full_model(tuned, head, None)
    model.compile(optimizer=keras.optimizers.Adam(phase2_rate), loss=loss, metrics=metrics_for(loss))
    history = model.fit(
        keras_inputs(x),
        y,
        epochs=phase2_epochs,
        batch_size=batch_size,
        verbose=0,
        callbacks=fit_callbacks(phase2_epochs, report("phase2"), should_cancel),
    )
    return {
        "backbone": tuned,
        "backbone_weights": tuned.get_weights(),
        "head": head,
        "history": {"phase1": phase1["history"], "phase2": history_of(history)},
        "unfreeze": unfreeze,
        "phase2_learning_rate": phase2_rate,
    }


def train_grown_backbone(
    *,
    backbone: keras.Model,
    x: Inputs,
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
    check_xy(x, y)
    if not np.issubdtype(np.asarray(y).dtype, np.integer):
        raise InvalidDatasetError(
            f"Expected integer class ids to train a grown backbone, received targets of dtype {np.asarray(y).dtype}."
        )
    probe = build_head(feature_shape(backbone), units=num_classes, activation="softmax", name="probe", seed=seed)
    model = full_model(backbone, probe, None)
    loss = "sparse_categorical_crossentropy"
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=metrics_for(loss))
    history = model.fit(
        keras_inputs(x),
        y,
        epochs=epochs,
        batch_size=batch_size,
        verbose=0,
        callbacks=fit_callbacks(epochs, progress, should_cancel),
    )
    return {"history": history_of(history)}
