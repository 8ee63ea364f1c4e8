"""What the SavedModel's functions need around a backbone (or a trunk segment) beyond its variables.

Both the plain path (:mod:`.module`) and the trunk path (:mod:`.trunk`) call a Keras backbone
inside a ``tf.function``: the module must track the lookup tables its layers hold
(:func:`backbone_resources`), and the call must never run on an empty batch (:func:`unless_empty`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf


def backbone_resources(model: keras.Model) -> list[Any]:
    """Return the TensorFlow resources (lookup tables) the backbone's layers hold.

    A SavedModel must track every resource its functions capture; a TextVectorization
    or StringLookup layer keeps its vocabulary in such tables, not in variables.
    """
    found: list[Any] = []
    for layer in model._flatten_layers(include_self=False, recursive=True):  # noqa: SLF001
        for value in vars(layer).values():
            if isinstance(value, tf.saved_model.experimental.TrackableResource) and all(
                value is not seen for seen in found
            ):
                found.append(value)
    return found


def unless_empty(run: Callable[[], tf.Tensor], num_rows: tf.Tensor, output: Any) -> tf.Tensor:
    """Return ``run()``, or an empty tensor shaped like ``output`` (a KerasTensor) when ``num_rows`` is 0.

    TensorFlow's CPU kernels fail on some layers with zero rows (a Conv2D then BatchNormalization
    answers "Incompatible shapes: [0,32,32,3] vs. [16]"), so an empty batch is not run. An output
    of unknown shape is run as it is.
    """
    shape = output.shape[1:]
    if any(d is None for d in shape):
        return run()
    empty = tf.zeros([0, *[int(d) for d in shape]], output.dtype)
    return tf.cond(num_rows > 0, run, lambda: empty)
