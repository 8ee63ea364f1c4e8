"""keras-hub task models (``BertTextClassifier``) imported as plain full models.

Why this exists: teams fine-tune with keras-hub and save ``task.save("x.keras")``. The file's
top level is the task class, not a Functional graph, so the flat-graph reader
(:mod:`modelhub.ml.keras_file`) cannot line it up with other files. A task is a functional graph
in disguise: its keras-hub backbone, then its own head layers (``BertTextClassifier``: the
backbone's ``pooled_output`` -> ``Dropout`` -> ``Dense``). This module loads the task through the
untrusted reader (:func:`modelhub.ml.safe_load.load_keras_task`: allow-listed classes only, no
preprocessor on any task node, and the weights the keras-hub configs declare, e.g. BertBackbone's
``vocabulary_size x hidden_dim``, bounded by ``max_declared_bytes`` before Keras builds anything:
:mod:`modelhub.ml.untrusted.keras_hub`), rebuilds the same graph as a plain ``keras.Model`` over the same layers (the
backbone stays the task's keras-hub backbone, the head is plain Keras), saves it, reloads that
file through the safe loader and checks it reproduces the task on probe rows. An import then
reads the rewritten file like any full model: the backbone is stored once, the head is served by
the assembly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelhub.ml.errors import HeadExtractionError, InvalidModelFileError
from modelhub.ml.probes import check_close, probe_inputs_for
from modelhub.ml.safe_load import keras_hub_task_name, load_keras_model, load_keras_task
from modelhub.ml.untrusted import Limits, read_config


@dataclass
class TaskRewrite:
    """What :func:`task_as_functional` did to one task file.

    Attributes:
        task_class: the task's registered name, e.g. ``keras_hub>BertTextClassifier``.
        backbone: the name of the task's backbone (the nested model the feature layer names).
        feature_output: which of the backbone's outputs the head reads, e.g. ``pooled_output``.
        head_layers: the task's own layers after the backbone, in order.
        inputs: the backbone's input names (what the assembly takes).
        verification: max abs / relative diff of the rewritten model vs the task on probe rows.
    """

    task_class: str
    backbone: str
    feature_output: str
    head_layers: list[str]
    inputs: list[str]
    verification: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "task_class": self.task_class,
            "backbone": self.backbone,
            "feature_output": self.feature_output,
            "head_layers": self.head_layers,
            "inputs": self.inputs,
            "verification": self.verification,
        }


def keras_hub_task_file(path: str | os.PathLike[str], **limits: int) -> str | None:
    """Return the registered task name when ``path`` holds an allowed keras-hub task, else None.

    Reads the zip and the config only (stages 1 and 2 of the reader). A task saved with its
    preprocessor is refused here, with how to save it without one.

    Raises:
        UnsafeModelError, InvalidModelFileError: the file fails the reader's checks.
    """
    return keras_hub_task_name(read_config(path, limits=Limits.from_kwargs(**limits)))


def task_as_functional(path: str | os.PathLike[str], destination: str | os.PathLike[str], **limits: int) -> TaskRewrite:
    """Rewrite a keras-hub task file as a plain functional full model saved at ``destination``.

    The rewritten model calls the task's own backbone (a keras-hub backbone, nested by its
    name) and then the task's own head layers; weights are the task's, bit for bit. It is saved,
    loaded back through the safe loader and checked against the task on probe rows.

    Args:
        path: the uploaded task file.
        destination: where to save the rewritten model (a ``.keras`` path).
        **limits: fields of :class:`modelhub.ml.untrusted.Limits`, for both files.

    Raises:
        UnsafeModelError, InvalidModelFileError: the file is not an allowed task, was saved with
            a preprocessor, or fails the reader's checks.
        HeadExtractionError: the head reads more than one backbone output, or the rewritten
            model does not reproduce the task.

    Example:
        >>> task_as_functional("classifier.keras", "work/classifier.keras").feature_output
        'pooled_output'
    """
    import keras

    task = load_keras_task(path, **limits)
    label = Path(path).name
    backbone = getattr(task, "backbone", None)
    if not isinstance(backbone, keras.Model):
        raise InvalidModelFileError(f"Expected the keras-hub task in '{label}' to have a backbone model, it has none.")
    feature_output = _feature_output(task, backbone, label)
    model = keras.Model(task.inputs, task.outputs, name=task.name)
    head_layers = [layer.name for layer in model.layers if layer is not backbone and layer not in backbone.layers]
    head_layers = [name for name in head_layers if name not in {t.name for t in _flat(task.inputs)}]
    destination = Path(destination)
    model.save(destination)
    rewritten = load_keras_model(destination, **limits)
    probe = probe_inputs_for(task)
    expected = np.asarray(task(probe, training=False), dtype=np.float64)
    got = np.asarray(rewritten(probe, training=False), dtype=np.float64)
    verification = check_close(expected, got, what=f"'{label}' rewritten as a functional model")
    return TaskRewrite(
        task_class=keras_hub_task_name({"registered_name": keras.saving.get_registered_name(type(task))}) or "",
        backbone=backbone.name,
        feature_output=feature_output,
        head_layers=head_layers,
        inputs=sorted(_input_names(backbone)),
        verification=verification,
    )


def _feature_output(task: Any, backbone: Any, label: str) -> str:
    """The name of the one backbone output the task's head reads (the backbone returns a dict)."""
    from modelhub.ml.inspect import graph_nodes

    outputs = backbone.output
    if not isinstance(outputs, dict):
        return "output"
    produced = {id(tensor): key for key, tensor in _backbone_call_outputs(task, backbone).items()}
    read = set()
    for layer, node in graph_nodes(task):
        if layer is backbone:
            continue
        read |= {produced[id(t)] for t in node.input_tensors if id(t) in produced}
    if len(read) != 1:
        raise HeadExtractionError(
            f"Expected the head of the keras-hub task in '{label}' to read one output of its backbone, "
            f"it reads {sorted(read) or 'none'}."
        )
    return read.pop()


def _backbone_call_outputs(task: Any, backbone: Any) -> dict[str, Any]:
    from modelhub.ml.inspect import graph_nodes

    for layer, node in graph_nodes(task):
        if layer is backbone:
            keys = sorted(backbone.output)  # Keras flattens a dict of outputs by sorted key
            return dict(zip(keys, node.output_tensors, strict=True))
    return {}


def _input_names(backbone: Any) -> list[str]:
    inputs = backbone.input
    return list(inputs) if isinstance(inputs, dict) else [t.name for t in _flat(inputs)]


def _flat(inputs: Any) -> list[Any]:
    import keras

    return keras.tree.flatten(inputs)
