"""What a family of real models is (``Family``), how its inputs reach a model or a SavedModel, and
the heads every family puts on its backbone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TASKS = ("topic", "sentiment", "quality", "intent", "urgency")
WIDTHS = (3, 5, 2, 4, 6)
IMAGE_SIZE = 32
SEQUENCE_LENGTH = 16
VOCABULARY_SIZE = 200


@dataclass
class Family:
    """K full models sharing one backbone, plus what the tests need to know about them.

    Attributes:
        id: short id, e.g. "mobilenetv2_nested".
        tasks: the task of each model; its file is saved as `<task>.keras`.
        models: the full models, one per task, in the same order.
        feature_layer: the layer to name in the import (None: the import must choose).
        auto_feature_layer: the layer the import should choose when none is named
            (None where the choice is ambiguous, e.g. nested and flat models mixed).
        input_names: the backbone's input names; a SavedModel of a backbone with several
            inputs is called with each one by this name.
        sample_inputs: `sample_inputs(num_rows, seed)` returns inputs for the models: an array
            (np.array of str objects for text) or a dict by input name.
        perturb_layer: a backbone layer (leaf name) whose weights the negative test changes.
        top_layers: the backbone's top weight-bearing layers (leaf names) that a fine-tune of
            its top changes (see :func:`fine_tune_top`); empty where not set.
        branch_point: the layer just below ``top_layers`` where such a model's branch starts,
            read off the architecture; None where no branch is possible (the import refuses).
    """

    id: str
    tasks: list[str]
    models: list[Any]
    feature_layer: str | None
    auto_feature_layer: str | None
    input_names: list[str]
    sample_inputs: Callable[[int, int], Any]
    perturb_layer: str | None = None
    top_layers: list[str] = field(default_factory=list)
    branch_point: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def output_widths(self) -> list[int]:
        return [int(model.outputs[0].shape[-1]) for model in self.models]

    def save(self, folder: Path) -> list[Path]:
        """Save each full model as `<folder>/<task>.keras`; return the paths in task order."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for task, model in zip(self.tasks, self.models, strict=True):
            path = folder / f"{task}.keras"
            model.save(path)
            paths.append(path)
        return paths

    def predict(self, index: int, inputs: Any):
        """Return model `index`'s outputs on `inputs` (inference mode, as a graph) as float32.

        As a graph, like every served model: on CPU, graph-mode op fusions round differently
        from eager execution (EfficientNetB0 alone: 1.7e-5 relative), which is not the
        assembly's doing.
        """
        import numpy as np
        import tensorflow as tf

        model = self.models[index]
        graph = tf.function(lambda batch: model(batch, training=False))
        return np.asarray(graph(model_inputs(inputs)), dtype="float32")


def model_inputs(inputs: Any) -> Any:
    """Turn sample inputs into what a Keras model call takes (strings become tf.string)."""
    import numpy as np

    if isinstance(inputs, dict):
        return {name: model_inputs(value) for name, value in inputs.items()}
    array = np.asarray(inputs)
    if array.dtype == object or array.dtype.kind == "U":
        import tensorflow as tf

        return tf.constant(array.astype(str))
    return array


def signature_arrays(inputs: Any) -> dict[str, Any]:
    """Return the SavedModel `serving_default` keyword arrays for sample inputs (no pickles).

    One input is passed as `inputs`; several inputs by their input names. Strings become
    fixed-width unicode arrays, which np.save writes without pickling and tf.constant reads
    as tf.string.
    """
    import numpy as np

    named = inputs if isinstance(inputs, dict) else {"inputs": inputs}
    arrays = {}
    for name, value in named.items():
        array = np.asarray(value)
        arrays[name] = array.astype(str) if array.dtype == object else array
    return arrays


# --- Heads ---------------------------------------------------------------------------------


def _head(features, *, task: str, index: int, width: int):
    """Apply head number `index` on `features`: softmax Dense, an MLP, or a linear Dense."""
    import keras

    kind = index % 3
    if kind == 1:
        hidden = keras.layers.Dense(16, activation="relu", name=f"{task}_hidden")(features)
        return keras.layers.Dense(width, activation="softmax", name=f"{task}_out")(hidden)
    activation = "softmax" if kind == 0 else None
    return keras.layers.Dense(width, activation=activation, name=f"{task}_out")(features)


def _tasks_and_widths(num_models: int, widths) -> list[tuple[str, int]]:
    widths = list(widths or WIDTHS[:num_models])
    if len(widths) != num_models or num_models > len(TASKS):
        raise ValueError(f"Give one width per model and at most {len(TASKS)} models; got {widths!r}.")
    return list(zip(TASKS[:num_models], widths, strict=True))


def _nested_models(backbone, input_tensor_factory, pairs, seed: int) -> list:
    """Full models with `backbone` nested as a sub-model: inputs -> backbone(inputs) -> head."""
    import keras

    models = []
    for index, (task, width) in enumerate(pairs):
        keras.utils.set_random_seed(seed + 1 + index)
        inputs = input_tensor_factory()
        features = backbone(inputs, training=False)
        models.append(keras.Model(inputs, _head(features, task=task, index=index, width=width), name=f"{task}_model"))
    return models


def _flat_models(backbone, pairs, seed: int) -> list:
    """Full models on the backbone's own layers, called directly: Model(backbone.input, head(backbone.output))."""
    import keras

    models = []
    for index, (task, width) in enumerate(pairs):
        keras.utils.set_random_seed(seed + 1 + index)
        outputs = _head(backbone.output, task=task, index=index, width=width)
        models.append(keras.Model(backbone.input, outputs, name=f"{task}_model"))
    return models
