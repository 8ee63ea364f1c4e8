"""The head stage: each row of a batch runs only its own task's head, inside the SavedModel.

Heads that share an architecture (a chain of Dense layers on the same input width) are
stacked into ``[num_heads, ...]`` variables (:class:`DenseChain`); other heads keep their own
variables (:class:`KerasHead`). Narrow heads gather one kernel per row; wide heads are
computed once per distinct task in the batch (:func:`grouped`), so a batch never costs all
heads nor batch x head-width copies of kernels.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from modelhub.ml.head_weights import PackedDenseHead, dense_chain_of, dense_chain_steps, steps_width

# A batch may gather one kernel copy per row while that costs at most this many floats
# (16 MiB); above it, rows are grouped and each distinct task's kernel is read once.
PER_ROW_GATHER_MAX_FLOATS = 4 * 1024 * 1024


# Stacked head weights are copied into their variables this many heads at a time.
STACK_CHUNK_HEADS = 256


class DenseChain:
    """Heads made of Dense (+ Activation/Dropout) layers, stacked into [G, ...] variables."""

    def __init__(
        self,
        members: list[keras.Model | PackedDenseHead],
        steps: list[tuple],
        module: tf.Module,
        index: int,
        max_width: int,
    ) -> None:
        self.steps = steps
        self.max_width = max_width
        self.width = steps_width(steps)
        dense_steps = [step for step in steps if step[0] == "dense"]
        input_width = _member_input_width(members[0])
        shapes, width = [], input_width
        for step in dense_steps:
            shapes.append((width, step[1]))
            width = step[1]

        # The variables are made first and filled a chunk of heads at a time, each head read once:
        # the build holds one copy of the stacked weights (10,000 Dense(10) heads: 512 MB), not
        # a stacked array plus the variable plus every head's own arrays.
        def variable(shape: tuple, name: str) -> tf.Variable:
            return tf.Variable(tf.zeros((len(members), *shape), tf.float32), trainable=False, name=name)

        self.kernels: list[tf.Variable] = []
        self.biases: list[tf.Variable | None] = []
        for dense_index, (shape, step) in enumerate(zip(shapes, dense_steps, strict=True)):
            self.kernels.append(variable(shape, f"group{index}_dense{dense_index}_kernel"))
            self.biases.append(variable(shape[1:], f"group{index}_dense{dense_index}_bias") if step[2] else None)
        chunk = min(len(members), STACK_CHUNK_HEADS)
        kernel_buffers = [np.empty((chunk, *shape), np.float32) for shape in shapes]
        bias_buffers = [np.empty((chunk, shape[1]), np.float32) for shape in shapes]
        for start in range(0, len(members), chunk):
            count = min(chunk, len(members) - start)
            for offset, member in enumerate(members[start : start + count]):
                chain = member.load() if isinstance(member, PackedDenseHead) else dense_chain_of(member)
                for dense_index, kernel in enumerate(chain.kernels):
                    kernel_buffers[dense_index][offset] = kernel
                    if chain.biases[dense_index] is not None:
                        bias_buffers[dense_index][offset] = chain.biases[dense_index]
            rows = tf.range(start, start + count)
            for dense_index, kernel in enumerate(self.kernels):
                kernel.scatter_update(tf.IndexedSlices(kernel_buffers[dense_index][:count], rows))
                if self.biases[dense_index] is not None:
                    self.biases[dense_index].scatter_update(tf.IndexedSlices(bias_buffers[dense_index][:count], rows))
        self.per_row_floats = sum(int(np.prod(shape)) for shape in shapes)
        setattr(module, f"group{index}_kernels", self.kernels)
        setattr(module, f"group{index}_biases", [b for b in self.biases if b is not None])

    def single(self, features: tf.Tensor, local: tf.Tensor) -> tf.Tensor:
        """Run head ``local`` (scalar) on every row: one kernel read per layer."""
        hidden = features
        dense_index = 0
        for step in self.steps:
            if step[0] == "dense":
                hidden = tf.matmul(hidden, tf.gather(self.kernels[dense_index], local))
                if self.biases[dense_index] is not None:
                    hidden = hidden + tf.gather(self.biases[dense_index], local)
                hidden = _activation(step[3])(hidden)
                dense_index += 1
            else:
                hidden = _activation(step[1])(hidden)
        return hidden

    def per_row(self, features: tf.Tensor, locals_: tf.Tensor) -> tf.Tensor:
        """Run each row's own head by gathering one kernel per row (narrow heads)."""
        hidden = features
        dense_index = 0
        for step in self.steps:
            if step[0] == "dense":
                kernels = tf.gather(self.kernels[dense_index], locals_)
                hidden = tf.einsum("bi,bio->bo", hidden, kernels)
                if self.biases[dense_index] is not None:
                    hidden = hidden + tf.gather(self.biases[dense_index], locals_)
                hidden = _activation(step[3])(hidden)
                dense_index += 1
            else:
                hidden = _activation(step[1])(hidden)
        return hidden

    def rows(self, features: tf.Tensor, locals_: tf.Tensor) -> tf.Tensor:
        """Run each row's head; the cost follows the number of distinct heads in the batch."""
        num_rows = tf.shape(features)[0]
        use_per_row = tf.cast(num_rows, tf.int64) * self.per_row_floats <= PER_ROW_GATHER_MAX_FLOATS
        out = tf.cond(
            use_per_row,
            lambda: self.per_row(features, locals_),
            lambda: grouped(features, locals_, self.single, self.width),
        )
        return _pad(out, self.max_width)


class KerasHead:
    """A head of any other architecture, called as a Keras model on its own variables."""

    def __init__(self, model: keras.Model, module: tf.Module, index: int, max_width: int) -> None:
        self._model = model  # kept out of tf.Module tracking: see _Untracked.
        self.max_width = max_width
        self.width = int(model.outputs[0].shape[-1])
        self.per_row_floats = 0
        setattr(module, f"group{index}_variables", [v.value for v in model.variables])

    def single(self, features: tf.Tensor, local: tf.Tensor) -> tf.Tensor:
        del local
        return tf.cast(self._model(features, training=False), tf.float32)

    def rows(self, features: tf.Tensor, locals_: tf.Tensor) -> tf.Tensor:
        return _pad(self.single(features, None), self.max_width)


def _member_input_width(member: keras.Model | PackedDenseHead) -> int:
    if isinstance(member, PackedDenseHead):
        return member.input_width
    return int(member.inputs[0].shape[1])


def group_key(head: keras.Model | PackedDenseHead, task_id: int) -> tuple:
    """Heads with the same key are stacked together: Dense chains of the same steps and input."""
    if isinstance(head, PackedDenseHead):
        return ("dense", head.steps, head.input_width)
    steps = dense_chain_steps(head)
    if steps is None:
        return ("keras", task_id)
    return ("dense", steps, _member_input_width(head))


def grouped(features: tf.Tensor, locals_: tf.Tensor, single: Callable, width: int) -> tf.Tensor:
    """Compute rows task by task: one head evaluation per distinct task in the batch."""
    unique, index, counts = tf.unique_with_counts(locals_)
    order = tf.argsort(index, stable=True)
    sorted_features = tf.gather(features, order)
    starts = tf.cumsum(counts, exclusive=True)
    num_unique = tf.size(unique)
    parts = tf.TensorArray(tf.float32, size=num_unique, infer_shape=False, element_shape=tf.TensorShape([None, width]))

    def body(i: tf.Tensor, parts: tf.TensorArray) -> tuple:
        rows = tf.slice(
            sorted_features,
            tf.stack([starts[i]] + [0] * (features.shape.rank - 1)),
            tf.stack([counts[i]] + [-1] * (features.shape.rank - 1)),
        )
        return i + 1, parts.write(i, tf.cast(single(rows, unique[i]), tf.float32))

    _, parts = tf.while_loop(lambda i, _: i < num_unique, body, [tf.constant(0), parts])
    sorted_out = tf.reshape(parts.concat(), [-1, width])
    return tf.gather(sorted_out, tf.math.invert_permutation(order))


def _pad(outputs: tf.Tensor, max_width: int) -> tf.Tensor:
    width = outputs.shape[-1]
    outputs = tf.cast(outputs, tf.float32)
    if width == max_width:
        return outputs
    return tf.pad(outputs, [[0, 0], [0, max_width - width]])


def _activation(name: str) -> Callable[[tf.Tensor], tf.Tensor]:
    if name == "linear":
        return lambda x: x
    function = keras.activations.get(name)
    return lambda x: function(x)
