"""Parse a ``.keras`` file's config into one flat graph of leaf layers, without deserialising the model.

Users save the same backbone in different shapes: nested as a sub-model (the Keras
transfer-learning guide's ``base(inputs)``), flattened (its layers called directly),
or both in one import. This module parses ``config.json`` into one flat graph whose
nodes are leaf-layer calls in topological order, with nested Functional and
Sequential models inlined. Each leaf knows where Keras stored its weights and assets
inside the archive (Keras names them by class and position, not by layer name), so the
archive (:mod:`modelhub.ml.keras_file.archive`) reads weights straight from
``model.weights.h5``, graphs are lined up without Keras (:mod:`~modelhub.ml.keras_file.align`),
and only the small parts a caller needs (a backbone, a head) are ever deserialised
(:mod:`~modelhub.ml.keras_file.submodel`).

Sub-models that are not plain Functional or Sequential models (a keras-hub
``BertBackbone``, say) are kept whole, as one leaf. Imports no TensorFlow or Keras.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from modelhub.ml.errors import InvalidModelFileError, LayerNotFoundError

KERAS_TENSOR = "__keras_tensor__"
# Groups Keras writes beside the layers: a trained model's optimizer state and model-level vars.
MODEL_STATE_PREFIXES = ("optimizer/", "vars/")
REF_KEY = "__ref__"
INLINED_CLASSES = frozenset({"Functional", "Sequential"})
OPERATION_KEY_PREFIX = "op:"
# Config keys that do not change what a layer computes at inference time.
IGNORED_CONFIG_KEYS = frozenset({"name", "trainable", "shared_object_id", "seed"})
IGNORED_CONFIG_SUFFIXES = ("_initializer", "_regularizer", "_constraint")

TensorRef = tuple[int, int]  # (flat node index, output index)


@dataclass
class FlatNode:
    """One call of a leaf layer (or one model input) in the flat graph.

    Attributes:
        index: position in the flat, topological order.
        name: the layer's own name.
        path: names from the top model down to the layer, joined by '/'.
        layer_key: the layer's weights path in the archive; nodes of a shared layer
            have the same key.
        class_name: Keras class name (``InputLayer`` for model inputs).
        layer: the serialised layer (module, class_name, config, registered_name).
        call: the call's args and kwargs, with tensors as ``{"__ref__": [node, output]}``.
        parents: node indices this call reads, in order, without repeats.
    """

    index: int
    name: str
    path: str
    layer_key: str
    class_name: str
    layer: dict[str, Any]
    call: dict[str, Any]
    parents: list[int] = field(default_factory=list)

    @property
    def is_input(self) -> bool:
        return self.class_name == "InputLayer"


@dataclass
class FlatGraph:
    """A model as leaf-layer calls in topological order.

    Attributes:
        name: the model's name.
        nodes: all nodes; ``nodes[i].index == i``.
        inputs: node indices of the model inputs, in the model's input order.
        outputs: output tensor refs, flattened.
        tensors: shape and dtype of every tensor ref some node reads, where known.
        aliases: nested model name or path -> its output refs (``feature_layer`` may
            name a nested model).
    """

    name: str
    nodes: list[FlatNode]
    inputs: list[int]
    outputs: list[TensorRef]
    tensors: dict[TensorRef, dict[str, Any]]
    aliases: dict[str, list[TensorRef]]

    def ancestors(self, index: int) -> set[int]:
        """Return ``index`` and every node it depends on."""
        seen = {index}
        stack = [index]
        while stack:
            for parent in self.nodes[stack.pop()].parents:
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        return seen

    def read_refs(self, index: int) -> list[TensorRef]:
        """Return the tensor refs node ``index`` reads, in call order."""
        return list(iter_refs(self.nodes[index].call))

    def resolve(self, name: str) -> TensorRef:
        """Return the tensor a ``feature_layer`` name designates.

        ``name`` may be a leaf layer's name, a nested model's name (its output), or a
        path such as ``base/global_average_pooling2d``.

        Raises:
            LayerNotFoundError: no such layer, several, or a layer with several outputs.
        """
        matches: list[list[TensorRef]] = []
        for key, refs in self.aliases.items():
            if key == name or key.endswith("/" + name) or key.split("/")[-1] == name:
                matches.append(refs)
        for node in self.nodes:
            if node.is_input:
                continue
            if node.name == name or node.path == name or node.path.endswith("/" + name):
                matches.append(self._node_outputs(node.index))
        unique: list[list[TensorRef]] = []
        for refs in matches:
            if refs not in unique:
                unique.append(refs)
        if not unique:
            names = [node.path for node in self.nodes if not node.is_input]
            nested = sorted(self.aliases)
            raise LayerNotFoundError(
                f"Expected a layer named '{name}' in model '{self.name}' (at the top level or inside a "
                f"nested model), found none. Nested models: {nested[:10]}; last layers: {names[-8:]}. "
                "Pass one of these names, or omit feature_layer to let ModelHub find the shared layer."
            )
        if len(unique) > 1:
            raise LayerNotFoundError(
                f"Expected one layer named '{name}' in model '{self.name}', found {len(unique)} (the same name "
                "at several depths, or a layer called several times). Pass its path, e.g. 'base/name'."
            )
        refs = unique[0]
        if len(refs) != 1:
            raise LayerNotFoundError(
                f"Expected layer '{name}' in model '{self.name}' to give one tensor, it gives {len(refs)}. "
                "Pick the layer that outputs the features."
            )
        return refs[0]

    def _node_outputs(self, index: int) -> list[TensorRef]:
        read = sorted({ref for node in self.nodes for ref in iter_refs(node.call) if ref[0] == index})
        read += [ref for ref in self.outputs if ref[0] == index and ref not in read]
        return read or [(index, 0)]


def iter_refs(tree: Any) -> Iterator[TensorRef]:
    """Yield the tensor refs inside a call structure, in order."""
    return (_ref(node) for node in _leaves(tree, _is_ref))


def map_refs(tree: Any, mapping) -> Any:
    """Return a copy of a call structure with every ref replaced by ``mapping(ref)``."""
    return _replace_leaves(tree, _is_ref, lambda node: mapping(_ref(node)))


def _leaves(tree: Any, is_leaf) -> Iterator[dict]:
    """Yield the dicts of a JSON-like tree that ``is_leaf`` accepts, in order (not below them)."""
    if isinstance(tree, dict):
        if is_leaf(tree):
            yield tree
            return
        for value in tree.values():
            yield from _leaves(value, is_leaf)
    elif isinstance(tree, (list, tuple)):
        for value in tree:
            yield from _leaves(value, is_leaf)


def _replace_leaves(tree: Any, is_leaf, replace) -> Any:
    """Return a copy of a JSON-like tree with each dict ``is_leaf`` accepts replaced by ``replace(it)``."""
    if isinstance(tree, dict):
        if is_leaf(tree):
            return replace(tree)
        return {key: _replace_leaves(value, is_leaf, replace) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_replace_leaves(value, is_leaf, replace) for value in tree]
    return tree


def _is_ref(node: dict) -> bool:
    return REF_KEY in node


def _ref(node: dict) -> TensorRef:
    return (int(node[REF_KEY][0]), int(node[REF_KEY][1]))


def _is_keras_tensor(node: dict) -> bool:
    return node.get("class_name") == KERAS_TENSOR


def _history(node: dict) -> tuple[str, int, int]:
    """The (layer name, node index, tensor index) a serialised Keras tensor points at."""
    history = (node.get("config") or {}).get("keras_history")
    return (history[0], int(history[1]), int(history[2]))


def normalized_layer_config(layer: dict[str, Any]) -> Any:
    """Return the parts of a serialised layer that decide what it computes."""
    return (layer.get("class_name"), layer.get("registered_name"), normalized_config(layer.get("config", {})))


def is_operation(entry: dict[str, Any]) -> bool:
    """Whether a serialised graph entry is a keras.ops operation (no weights) rather than a layer."""
    return str(entry.get("module") or "").startswith("keras.src.ops")


def normalized_config(value: Any) -> Any:
    """Return a layer config without what does not change its computation (names, seeds, ...)."""
    if isinstance(value, dict):
        return {
            key: normalized_config(item)
            for key, item in sorted(value.items())
            if key not in IGNORED_CONFIG_KEYS and not key.endswith(IGNORED_CONFIG_SUFFIXES)
        }
    if isinstance(value, (list, tuple)):
        return [normalized_config(item) for item in value]
    return value


# --------------------------------------------------------------------------- parsing


def parse_config(config: dict[str, Any]) -> FlatGraph:
    """Return the flat graph of a parsed ``config.json``.

    Raises:
        InvalidModelFileError: the top level is not a Functional or Sequential model, or
            the graph cannot be resolved.
    """
    return _GraphBuilder(config).build()


class _GraphBuilder:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.nodes: list[FlatNode] = []
        self.tensors: dict[TensorRef, dict[str, Any]] = {}
        self.aliases: dict[str, list[TensorRef]] = {}

    def build(self) -> FlatGraph:
        class_name = self.config.get("class_name")
        inner = self.config.get("config") or {}
        name = inner.get("name", "model")
        if class_name == "Functional":
            inputs = [self._add_input(entry) for entry in inner["layers"] if entry.get("class_name") == "InputLayer"]
            by_name = {self.nodes[index].name: index for index in inputs}
            order = [by_name[triple[0]] for triple in _flatten_triples(inner.get("input_layers"))]
            outputs = self._inline_functional(inner, {name: (index, 0) for name, index in by_name.items()}, "", "")
            return FlatGraph(name, self.nodes, order, outputs, self.tensors, self.aliases)
        if class_name == "Sequential":
            layers = inner.get("layers", [])
            if layers and layers[0].get("class_name") == "InputLayer":
                first = self._add_input(layers[0])
            else:
                shape = (self.config.get("build_config") or {}).get("input_shape")
                if not shape:
                    raise InvalidModelFileError(
                        f"Expected Sequential model '{name}' to be built with a known input shape; it was not. "
                        "Build it with keras.Input(shape=...) as its first layer and save again."
                    )
                first = self._add_input(
                    {"class_name": "InputLayer", "config": {"name": "input_layer", "batch_shape": shape}}
                )
            outputs = self._inline_sequential(inner, (first, 0), "", "")
            return FlatGraph(name, self.nodes, [first], outputs, self.tensors, self.aliases)
        raise InvalidModelFileError(
            f"Expected a functional or sequential Keras model at the top level, received a {class_name}. "
            "Wrap it: inputs = keras.Input(...); model = keras.Model(inputs, your_model(inputs))."
        )

    def _add_input(self, entry: dict[str, Any]) -> int:
        config = entry.get("config", {})
        name = config.get("name") or entry.get("name") or f"input_{len(self.nodes)}"
        index = len(self.nodes)
        self.nodes.append(FlatNode(index, name, name, "", "InputLayer", entry, {"args": [], "kwargs": {}}))
        shape = config.get("batch_shape") or [None, *config.get("shape", [])]
        self.tensors[(index, 0)] = {"shape": list(shape), "dtype": config.get("dtype", "float32")}
        return index

    def _layer_paths(self, entries: list[dict[str, Any]], weights_prefix: str) -> list[str]:
        used: dict[str, int] = {}
        paths = []
        for entry in entries:
            if is_operation(entry):
                # keras.ops calls on tensors (`inputs + x`) are operations, not layers: no weights,
                # and no place in Keras' weights paths.
                paths.append(f"{OPERATION_KEY_PREFIX}{weights_prefix}{entry.get('name')}")
                continue
            snake = _to_snake_case(entry.get("class_name", "layer"))
            if snake in used:
                used[snake] += 1
                snake = f"{snake}_{used[snake]}"
            else:
                used[snake] = 0
            paths.append(f"{weights_prefix}layers/{snake}")
        return paths

    def _inline_functional(
        self, config: dict[str, Any], input_map: dict[str, TensorRef], name_prefix: str, weights_prefix: str
    ) -> list[TensorRef]:
        entries = config.get("layers", [])
        paths = self._layer_paths(entries, weights_prefix)
        produced: dict[tuple[str, int, int], TensorRef] = {}
        for entry in entries:
            if entry.get("class_name") == "InputLayer":
                produced[(entry["name"], 0, 0)] = input_map[entry["name"]]
        pending = [
            (position, node_index, call)
            for position, entry in enumerate(entries)
            if entry.get("class_name") != "InputLayer"
            for node_index, call in enumerate(entry.get("inbound_nodes", []))
        ]
        while pending:
            waiting = []
            for position, node_index, call in pending:
                needed = list(_iter_histories(call))
                if not all(tuple(history) in produced for history in needed):
                    waiting.append((position, node_index, call))
                    continue
                entry = entries[position]
                flat_call = _call_with_refs(call, produced, self.tensors)
                outputs = self._add_call(entry, flat_call, name_prefix, paths[position])
                for tensor_index, ref in enumerate(outputs):
                    produced[(entry["name"], node_index, tensor_index)] = ref
            if len(waiting) == len(pending):
                missing = sorted({h[0] for _, _, call in waiting for h in _iter_histories(call)})
                raise InvalidModelFileError(
                    f"Expected every layer call in '{config.get('name')}' to read tensors made earlier, "
                    f"found calls waiting on {missing[:5]}. The config is malformed; save the model again."
                )
            pending = waiting
        outputs = []
        for triple in _flatten_triples(config.get("output_layers")):
            key = (triple[0], int(triple[1]), int(triple[2]))
            if key not in produced:
                # Keras writes a nested model's output with the model's own node index when the
                # model output IS that nested model's tensor; a layer called once has one node here.
                calls = {k[1] for k in produced if k[0] == key[0]}
                if len(calls) == 1:
                    key = (key[0], next(iter(calls)), key[2])
            if key not in produced:
                raise InvalidModelFileError(f"Expected output {list(key)} in '{config.get('name')}', found none.")
            outputs.append(produced[key])
        return outputs

    def _inline_sequential(
        self, config: dict[str, Any], start: TensorRef, name_prefix: str, weights_prefix: str
    ) -> list[TensorRef]:
        entries = [entry for entry in config.get("layers", []) if entry.get("class_name") != "InputLayer"]
        paths = self._layer_paths(entries, weights_prefix)
        current = [start]
        for entry, path in zip(entries, paths, strict=True):
            input_shape = (entry.get("build_config") or {}).get("input_shape")
            if current[0] not in self.tensors and isinstance(input_shape, list):
                # Sequential configs record no tensors; each layer's build shape is its input's shape.
                self.tensors[current[0]] = {"shape": input_shape, "dtype": "float32"}
            call = {"args": [{REF_KEY: list(current[0])}], "kwargs": {}}
            current = self._add_call(entry, call, name_prefix, path)
            if not current:
                raise InvalidModelFileError(f"Expected layer '{entry.get('name')}' to produce a tensor.")
            current = current[:1] if entry.get("class_name") not in INLINED_CLASSES else current
        return current

    def _add_call(self, entry: dict[str, Any], call: dict[str, Any], name_prefix: str, path: str) -> list[TensorRef]:
        """Add one call; return its output refs (a nested model's outputs, or [(node, 0)])."""
        layer_name = entry.get("name") or (entry.get("config") or {}).get("name") or "layer"
        full_name = f"{name_prefix}{layer_name}"
        module = entry.get("module") or ""
        if entry.get("class_name") in INLINED_CLASSES and (module == "keras" or module.startswith("keras.")):
            inner = entry.get("config") or {}
            refs = list(iter_refs(call))
            if entry["class_name"] == "Sequential":
                outputs = self._inline_sequential(inner, refs[0], f"{full_name}/", f"{path}/")
            else:
                nested_inputs = [
                    layer["name"] for layer in inner.get("layers", []) if layer.get("class_name") == "InputLayer"
                ]
                order = [triple[0] for triple in _flatten_triples(inner.get("input_layers"))] or nested_inputs
                if len(refs) != len(order):
                    raise InvalidModelFileError(
                        f"Expected nested model '{layer_name}' to be called with {len(order)} tensors, "
                        f"found {len(refs)}."
                    )
                outputs = self._inline_functional(
                    inner, dict(zip(order, refs, strict=True)), f"{full_name}/", f"{path}/"
                )
            self.aliases.setdefault(full_name, outputs)
            return outputs
        index = len(self.nodes)
        parents: list[int] = []
        for ref in iter_refs(call):
            if ref[0] not in parents:
                parents.append(ref[0])
        self.nodes.append(
            FlatNode(index, layer_name, full_name, path, entry.get("class_name", ""), entry, call, parents)
        )
        return [(index, 0)]


def _call_with_refs(call: Any, produced: dict, tensors: dict) -> Any:
    """Replace each serialised Keras tensor of a call by a ref to the flat node that makes it."""

    def convert(node: dict) -> dict:
        config = node.get("config") or {}
        ref = produced[_history(node)]
        tensors.setdefault(ref, {"shape": config.get("shape"), "dtype": config.get("dtype")})
        return {REF_KEY: list(ref)}

    return _replace_leaves(call, _is_keras_tensor, convert)


def _iter_histories(call: Any) -> Iterator[tuple[str, int, int]]:
    return (_history(node) for node in _leaves(call, _is_keras_tensor))


def _flatten_triples(value: Any) -> list[list]:
    """Flatten Keras' input_layers/output_layers structure into [name, node, tensor] triples."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [triple for key in value for triple in _flatten_triples(value[key])]
    if isinstance(value, (list, tuple)) and len(value) == 3 and isinstance(value[0], str):
        return [list(value)]
    if isinstance(value, (list, tuple)):
        return [triple for item in value for triple in _flatten_triples(item)]
    return []


def _to_snake_case(name: str) -> str:
    """Keras' own naming rule for weights paths (keras.src.utils.naming.to_snake_case)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()

