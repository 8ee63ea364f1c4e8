"""What the SavedModel's functions need around a backbone (or a trunk segment) beyond its variables.

Both the plain path (:mod:`.module`) and the trunk path (:mod:`.trunk`) call a Keras backbone
inside a ``tf.function``: the module must track the lookup tables its layers hold
(:func:`backbone_resources`), and the call must never run on an empty batch (:func:`at_least_one_row` for the
whole backbone, :func:`unless_empty` for a trunk segment, which often gets no rows).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


def at_least_one_row(run: Callable[[list[tf.Tensor]], tf.Tensor], inputs: Sequence[tf.Tensor]) -> tf.Tensor:
    """Return ``run(inputs)``, with an empty batch run as one zero row whose output is dropped.

    The guard of the whole backbone (the plain path): TensorFlow's CPU kernels fail on some layers
    with zero rows (see :func:`unless_empty`). A ``tf.cond`` around the backbone would take every
    backbone variable as an input and cost every call (~1 ms at batch 1 on MobileNetV2, ~10%);
    padding adds ``max(0, 1 - rows)`` rows, which is no row at all for a batch that has some.
    """
    num_rows = tf.shape(inputs[0])[0]
    extra = tf.maximum(1 - num_rows, 0)
    padded = [
        tf.pad(tensor, [[0, extra]] + [[0, 0]] * (tensor.shape.rank - 1), constant_values=tf.zeros([], tensor.dtype))
        for tensor in inputs
    ]
    return run(padded)[:num_rows]


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
