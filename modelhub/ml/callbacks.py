"""Keras callbacks of the training functions: per-epoch progress, cancel, early stopping.

Callers pass plain functions (``progress(metrics)``, ``should_cancel()``) and a patience; the
training functions in :mod:`modelhub.ml.train` turn them into these callbacks, so code outside
``modelhub.ml`` never touches Keras.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from modelhub.ml.errors import TrainingCancelled

ProgressCallback = Callable[[dict[str, Any]], None]
CancelCheck = Callable[[], bool]
# Smaller changes of the validation loss do not count as an improvement.
EARLY_STOPPING_MIN_DELTA = 1e-6


class ProgressAndCancel(keras.callbacks.Callback):
    """Report each epoch's metrics to ``progress`` and poll ``should_cancel`` before each batch.

    Args:
        epochs: the number of epochs of the run (reported with every epoch).
        progress: called after each epoch with ``{"epoch", "epochs", <metric>: float, ...}``,
            validation metrics (``val_*``) included when the fit has validation data.
        should_cancel: polled before every batch; True raises ``TrainingCancelled``.

    Example:
        >>> model.fit(x, y, epochs=3, callbacks=[ProgressAndCancel(3, print, lambda: False)])
    """

    def __init__(self, epochs: int, progress: ProgressCallback | None, should_cancel: CancelCheck | None) -> None:
        super().__init__()
        self.epochs = epochs
        self.progress = progress
        self.should_cancel = should_cancel

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self.should_cancel is not None and self.should_cancel():
            raise TrainingCancelled(f"Training was cancelled before batch {batch + 1}; nothing was saved.")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.progress is not None:
            metrics = {key: float(value) for key, value in (logs or {}).items()}
            self.progress({"epoch": epoch + 1, "epochs": self.epochs, **metrics})


def early_stopping(patience: int) -> keras.callbacks.EarlyStopping:
    """Return a callback that stops a fit once ``val_loss`` has not improved for ``patience`` epochs.

    The weights of the last epoch are kept (not the best epoch's). After the fit,
    ``callback.stopped_epoch`` is the 0-based epoch it stopped after, or 0 when it did not stop.

    Example:
        >>> stop = early_stopping(3)
        >>> model.fit(x, y, validation_data=(x_val, y_val), epochs=50, callbacks=[stop])
    """
    return keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=int(patience), min_delta=EARLY_STOPPING_MIN_DELTA, mode="min"
    )
