"""Build the part of a ``.keras`` file that a caller needs (a backbone, a head, a branch) as a Keras model.

Only a sub-config is deserialised, with Keras' safe mode, and only the layers it holds get
their weights, read from the checked archive (:class:`modelhub.ml.keras_file.archive.KerasArchive`).
The backbone cuts that import and assembly need (:func:`backbone_from_file`, :func:`ends_at`)
live here too. Keras is imported inside the functions that build models, so the graph and
comparison modules stay importable without TensorFlow.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from modelhub.ml.errors import LayerNotFoundError
from modelhub.ml.keras_file.archive import KerasArchive, import_registering_packages
from modelhub.ml.keras_file.graph import (
    INLINED_CLASSES,
    KERAS_TENSOR,
    OPERATION_KEY_PREFIX,
    FlatGraph,
    TensorRef,
    map_refs,
    parse_config,
)
from modelhub.ml.untrusted import Limits, read_config


def build_submodel(
    archive: KerasArchive,
    output: TensorRef,
    *,
    start: TensorRef | None = None,
    start_name: str = "features",
    name: str = "model",
) -> Any:
    """Deserialise the part of the archive's graph that computes ``output``.

    Args:
        archive: the opened archive.
        output: the tensor the new model returns.
        start: when given, a tensor replaced by a fresh ``keras.Input`` named
            ``start_name`` (the head's input); otherwise the model inputs are used.
        start_name: the name of that input.
        name: the new model's name.

    Returns:
        A ``keras.Model`` with its weights and assets loaded from the archive.

    Example:
        >>> backbone = build_submodel(archive, feature)
        >>> head = build_submodel(archive, archive.graph.outputs[0], start=feature)
    """
    import keras

    graph = archive.graph
    needed = graph.ancestors(output[0])
    if start is not None:
        needed -= graph.ancestors(start[0])
    config, key_of_name = _submodel_config(graph, output, needed, start, start_name, name)
    import_registering_packages(config)  # the config is a cut of the checked one
    model = keras.saving.deserialize_keras_object(config, safe_mode=True)
    load_layer_states(archive, model, key_of_name)
    return model


def submodel_layer_names(
    graph: FlatGraph, output: TensorRef, *, start: TensorRef | None = None, start_name: str = "features"
) -> dict[int, str]:
    """Return node index -> that node's layer name in ``build_submodel(archive, output, start=...)``.

    Nodes of inputs (and of ``start`` and before) are left out. Nothing is deserialised.
    """
    needed = graph.ancestors(output[0])
    if start is not None:
        needed -= graph.ancestors(start[0])
    _, key_of_name = _submodel_config(graph, output, needed, start, start_name, "model")
    name_of_key = {key: name for name, key in key_of_name.items()}
    return {index: name_of_key[graph.nodes[index].layer_key] for index in needed if not graph.nodes[index].is_input}


def load_layer_states(archive: KerasArchive, model: Any, key_of_name: dict[str, str]) -> None:
    """Load each named layer's weights and assets from the archive paths given."""
    from keras.src.saving import saving_lib

    archive.check_values()
    store = saving_lib.H5IOStore(archive.h5_path, mode="r")
    assets = archive.assets_dir
    asset_store = saving_lib.DiskIOStore(str(assets), mode="r") if assets is not None else None
    try:
        for layer_name, layer_key in key_of_name.items():
            if layer_key.startswith(OPERATION_KEY_PREFIX):
                continue
            saving_lib._load_state(  # noqa: SLF001 - the one Keras loader that takes a weights path
                model.get_layer(layer_name),
                weights_store=store,
                assets_store=asset_store,
                inner_path=layer_key,
                visited_saveables=set(),
            )
    finally:
        store.close()


def _submodel_config(
    graph: FlatGraph,
    output: TensorRef,
    needed: set[int],
    start: TensorRef | None,
    start_name: str,
    name: str,
) -> tuple[dict[str, Any], dict[str, str]]:
    names: dict[str, str] = {}  # layer_key (or input index) -> new layer name
    used_names: set[str] = set()
    entries: dict[str, dict[str, Any]] = {}
    node_position: dict[int, int] = {}
    key_of_name: dict[str, str] = {}
    layers: list[dict[str, Any]] = []
    input_triples: list[tuple[str, list]] = []

    def unique(base: str) -> str:
        candidate, counter = base, 1
        while candidate in used_names:
            candidate = f"{base}_{counter}"
            counter += 1
        used_names.add(candidate)
        return candidate

    start_layer = None
    if start is not None:
        spec = graph.tensors.get(start)
        if spec is None or spec.get("shape") is None:
            raise LayerNotFoundError("Expected the feature tensor's shape to be recorded in the config, it is not.")
        start_layer = unique(start_name)
        layers.append(_input_entry(start_layer, spec["shape"], spec["dtype"]))
        input_triples.append((start_layer, [start_layer, 0, 0]))

    def tensor(ref: TensorRef) -> dict[str, Any]:
        # Keras only needs a placeholder shape for a call's arguments: it looks the real
        # tensor up by keras_history.
        spec = graph.tensors.get(ref) or {"shape": [None], "dtype": "float32"}
        if start is not None and ref == start:
            history = [start_layer, 0, 0]
        else:
            node = graph.nodes[ref[0]]
            history = [names[node.layer_key or f"input:{node.index}"], node_position[node.index], ref[1]]
        return {
            "class_name": KERAS_TENSOR,
            "config": {"shape": spec.get("shape"), "dtype": spec.get("dtype"), "keras_history": history},
        }

    for node in graph.nodes:
        if node.index not in needed:
            continue
        if node.is_input:
            new_name = unique(node.name)
            names[f"input:{node.index}"] = new_name
            node_position[node.index] = 0
            spec = graph.tensors[(node.index, 0)]
            layers.append(_input_entry(new_name, spec["shape"], spec["dtype"]))
            input_triples.append((node.name, [new_name, 0, 0]))
            continue
        if node.layer_key not in names:
            new_name = unique(node.name)
            names[node.layer_key] = new_name
            key_of_name[new_name] = node.layer_key
            entry = copy.deepcopy({k: v for k, v in node.layer.items() if k != "inbound_nodes"})
            entry["name"] = new_name
            entry.setdefault("config", {})["name"] = new_name
            entry["inbound_nodes"] = []
            entries[node.layer_key] = entry
            layers.append(entry)
        entry = entries[node.layer_key]
        node_position[node.index] = len(entry["inbound_nodes"])
        entry["inbound_nodes"].append(map_refs(node.call, tensor))
    _strip_shared_ids(layers)
    if len(input_triples) == 1:
        input_layers: Any = input_triples[0][1]
    else:
        input_layers = {key: triple for key, triple in input_triples}
    output_tensor = tensor(output)["config"]["keras_history"]
    config = {
        "module": "keras.src.models.functional",
        "class_name": "Functional",
        "registered_name": "Functional",
        "config": {
            "name": name,
            "trainable": True,
            "layers": layers,
            "input_layers": input_layers,
            "output_layers": output_tensor,
        },
    }
    return config, key_of_name


def _input_entry(name: str, shape: list, dtype: str) -> dict[str, Any]:
    return {
        "module": "keras.layers",
        "class_name": "InputLayer",
        "config": {"batch_shape": list(shape), "dtype": dtype, "sparse": False, "ragged": False, "name": name},
        "registered_name": None,
        "name": name,
        "inbound_nodes": [],
    }


def _strip_shared_ids(value: Any) -> None:
    if isinstance(value, dict):
        value.pop("shared_object_id", None)
        for item in value.values():
            _strip_shared_ids(item)
    elif isinstance(value, list):
        for item in value:
            _strip_shared_ids(item)


def ends_at(path: str | os.PathLike[str], feature_layer: str, *, limits: Limits | None = None) -> bool:
    """Return whether a model file's single output is ``feature_layer``'s (no cut needed).

    Models that are not functional or sequential at the top level (a keras-hub backbone
    saved alone) answer True when their own name is ``feature_layer``. Only the zip and the
    config are read (through the untrusted-file reader, under ``limits``).
    """
    config = read_config(path, limits=limits)
    if config.get("class_name") not in INLINED_CLASSES:
        return (config.get("config") or {}).get("name") == feature_layer
    graph = parse_config(config)
    if len(graph.outputs) != 1:
        return False
    try:
        return graph.resolve(feature_layer) == graph.outputs[0]
    except LayerNotFoundError:
        return False


def backbone_from_file(
    path: str | os.PathLike[str], feature_layer: str | None, *, name: str | None = None, limits: Limits | None = None
):
    """Return the backbone stored in a file, cut at ``feature_layer`` (any depth) when given.

    The file is opened through the untrusted-file reader under ``limits``; its weights are
    checked as they are loaded.

    Example:
        >>> backbone = backbone_from_file("full.keras", "base/global_average_pooling2d")
    """
    with KerasArchive(path, limits=limits) as opened:
        opened.check_layout()
        if feature_layer is None:
            if len(opened.graph.outputs) != 1:
                raise LayerNotFoundError(
                    f"Expected a backbone with one output, '{opened.graph.name}' has {len(opened.graph.outputs)}. "
                    "Pass feature_layer."
                )
            feature = opened.graph.outputs[0]
        else:
            feature = opened.graph.resolve(feature_layer)
        return build_submodel(opened, feature, name=name or opened.graph.name)
