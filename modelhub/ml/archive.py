"""Read a ``.keras`` archive as a flat graph of leaf layers, without deserialising the model.

Users save the same backbone in different shapes: nested as a sub-model (the Keras
transfer-learning guide's ``base(inputs)``), flattened (its layers called directly),
or both in one import. This module parses ``config.json`` into one flat graph whose
nodes are leaf-layer calls in topological order, with nested Functional and
Sequential models inlined. Each leaf knows where Keras stored its weights and assets
inside the archive (Keras names them by class and position, not by layer name), so
weights are compared straight from ``model.weights.h5`` and only the small parts a
caller needs (a backbone, a head) are ever deserialised, from a sub-config, with
Keras' safe mode.

Sub-models that are not plain Functional or Sequential models (a keras-hub
``BertBackbone``, say) are kept whole, as one leaf.
"""

from __future__ import annotations

import copy
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelhub.ml import untrusted
from modelhub.ml.errors import BackboneMismatchError, InvalidModelFileError, LayerNotFoundError, UnsafeModelError
from modelhub.ml.untrusted import ASSETS_PREFIX, WEIGHTS_MEMBER, Limits, UntrustedKerasFile

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


# --------------------------------------------------------------------------- the archive


class KerasArchive:
    """An opened ``.keras`` file: its flat graph, weights and assets, read lazily.

    Opening goes through :class:`modelhub.ml.untrusted.UntrustedKerasFile`, so the zip, the
    config and the weights file's structure are checked before anything here reads them, and
    every weight read is checked for NaN and Inf. Use as a context manager.

    Example:
        >>> with KerasArchive("full.keras") as archive:
        ...     archive.graph.resolve("pool")
    """

    def __init__(self, path: str | os.PathLike[str], *, limits: Limits | None = None) -> None:
        self.path = Path(path)
        self.file = UntrustedKerasFile(self.path, limits=limits)
        try:
            self.config = self.file.config
            self.graph = parse_config(self.config)
        except BaseException:
            self.file.close()
            raise
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._assets_dir: Path | None = None
        self._values_checked = False
        self._weights_cache: dict[str, list[tuple[str, np.ndarray]]] = {}

    def __enter__(self) -> KerasArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def file_info(self) -> dict[str, Any]:
        """What the checks saw (see :meth:`modelhub.ml.untrusted.UntrustedKerasFile.info`)."""
        return self.file.info()

    def check_values(self) -> None:
        """Read every weight once and refuse NaN or Inf (done once per opened file)."""
        if not self._values_checked:
            self.file.check_values()
            self._values_checked = True

    @property
    def h5_path(self) -> Path:
        """The checked weights file, extracted into a temporary folder."""
        if not self.file.has_weights:
            raise InvalidModelFileError(
                f"Expected '{WEIGHTS_MEMBER}' inside '{self.path.name}'. Save the model with "
                "model.save('x.keras') (Keras 3)."
            )
        return self.file.h5_path

    @property
    def assets_dir(self) -> Path | None:
        """The archive's assets, extracted, or None when it has none."""
        if self._assets_dir is None:
            members = [name for name in self.file.names if name.startswith(ASSETS_PREFIX) and not name.endswith("/")]
            if not members:
                return None
            self._tmp = self._tmp or tempfile.TemporaryDirectory(prefix="modelhub-archive-")
            for member in members:
                self.file.extract_member(member, self._tmp.name)
            self._assets_dir = Path(self._tmp.name) / ASSETS_PREFIX.rstrip("/")
        return self._assets_dir

    def stores_sublayers(self, node: FlatNode) -> bool:
        """Whether ``node``'s layer is a model kept by its constructor arguments (a keras-hub backbone).

        Its file holds its sub-layers' weights (``layers/...``) but no layer graph, so the
        flat graph cannot look inside it: it is one opaque layer.
        """
        return any(name.startswith("layers/") for name, _ in self.layer_state(node.layer_key))

    def layer_state(self, layer_key: str) -> list[tuple[str, np.ndarray]]:
        """Return ``[(relative name, array)]`` for a layer's weights and assets, sorted.

        Weights come from the checked datasets under ``layer_key`` (sub-layers included);
        assets (vocabularies) as uint8 arrays of their file bytes.
        """
        if layer_key in self._weights_cache:
            return self._weights_cache[layer_key]
        items: list[tuple[str, np.ndarray]] = list(self.file.iter_datasets(layer_key)) if layer_key else []
        prefix = f"{ASSETS_PREFIX}{layer_key}/"
        for member in sorted(self.file.names):
            if member.startswith(prefix) and not member.endswith("/"):
                items.append(
                    (f"assets/{member[len(prefix) :]}", np.frombuffer(self.file.read_member(member), dtype=np.uint8))
                )
        items.sort(key=lambda item: item[0])
        self._weights_cache[layer_key] = items  # the reference is compared with every file: read it once
        return items

    def weights_paths(self) -> list[str]:
        """Return every dataset path in the weights file."""
        return sorted(self.file.datasets)

    def check_layout(self) -> None:
        """Raise unless every stored weight belongs to a leaf of the flat graph.

        This guards the one assumption this module makes about Keras' file layout.
        """
        keys = sorted({node.layer_key for node in self.graph.nodes if node.layer_key}, key=len, reverse=True)
        for path in self.weights_paths():
            if path.startswith(MODEL_STATE_PREFIXES):
                continue  # a compiled model's optimizer slots and the model's own variables
            if not any(path.startswith(key + "/") for key in keys):
                raise InvalidModelFileError(
                    f"Expected every weight in '{self.path.name}' to belong to a layer of its config, found "
                    f"'{path}' that does not. The file may come from another Keras version; load it with "
                    "Keras and save it again with model.save('x.keras')."
                )


# --------------------------------------------------------------------------- comparing


@dataclass
class Alignment:
    """How a candidate model's flat graph lines up with a reference's.

    Attributes:
        nodes: reference node index -> candidate node index, for nodes with the same
            class, config and connectivity.
        identical: reference nodes whose weights (and every ancestor's) are also
            bit-identical.
        first_difference: a message naming the first reference node (in graph order)
            that is not identical, or None.
        first_node: that node's index, or None.
    """

    nodes: dict[int, int]
    identical: set[int]
    first_difference: str | None
    first_node: int | None = None


def align(reference: KerasArchive, candidate: KerasArchive, *, stop_at: int | None = None) -> Alignment:
    """Line ``candidate`` up with ``reference`` by structure, then compare weights.

    Nodes are matched from the inputs forward: a reference node matches the first
    unused candidate node of the same class and config that reads the matched
    tensors. Nesting does not matter. Weights are compared bit for bit.

    Args:
        reference: the reference model.
        candidate: the model to compare.
        stop_at: when given, only this reference node and its ancestors are compared.

    Returns:
        The :class:`Alignment`.
    """
    ref_graph, cand_graph = reference.graph, candidate.graph
    wanted = ref_graph.ancestors(stop_at) if stop_at is not None else None
    mapping: dict[int, int] = {}
    identical: set[int] = set()
    first: tuple[int, str] | None = None

    def note(index: int, message: str) -> None:
        nonlocal first
        if first is None or index < first[0]:
            first = (index, message)

    ref_inputs = [ref_graph.nodes[i] for i in ref_graph.inputs]
    cand_inputs = [cand_graph.nodes[i] for i in cand_graph.inputs]
    if {n.name for n in ref_inputs} == {n.name for n in cand_inputs}:
        by_name = {n.name: n for n in cand_inputs}
        pairs = [(n, by_name[n.name]) for n in ref_inputs]
    else:
        pairs = list(zip(ref_inputs, cand_inputs, strict=False))
    for ref_node, cand_node in pairs:
        ref_spec = ref_graph.tensors[(ref_node.index, 0)]
        cand_spec = cand_graph.tensors[(cand_node.index, 0)]
        if [ref_spec["shape"], ref_spec["dtype"]] == [cand_spec["shape"], cand_spec["dtype"]]:
            mapping[ref_node.index] = cand_node.index
            identical.add(ref_node.index)
        else:
            note(
                ref_node.index,
                f"input '{ref_node.name}' is {ref_spec['dtype']}{ref_spec['shape']} in the reference and "
                f"{cand_spec['dtype']}{cand_spec['shape']} here",
            )
    if len(ref_inputs) != len(cand_inputs):
        note(0, f"the reference has {len(ref_inputs)} inputs, this model has {len(cand_inputs)}")

    index_by_key: dict[Any, list[int]] = {}
    for node in cand_graph.nodes:
        if not node.is_input:
            index_by_key.setdefault(_node_key(node, None), []).append(node.index)
    used: set[int] = set()
    layer_pairs: dict[str, str] = {}
    for node in ref_graph.nodes:
        if node.is_input or (wanted is not None and node.index not in wanted):
            continue
        if not all(parent in mapping for parent in node.parents):
            continue  # an ancestor already differs; the first difference is recorded there
        key = _node_key(node, mapping)
        match = next((c for c in index_by_key.get(key, []) if c not in used), None)
        if match is None:
            note(node.index, _structure_difference(node, mapping, ref_graph, cand_graph))
            continue
        used.add(match)
        mapping[node.index] = match
        if not all(parent in identical for parent in node.parents):
            continue
        cand_node = cand_graph.nodes[match]
        known = layer_pairs.get(node.layer_key)
        if known is not None and known != cand_node.layer_key:
            note(node.index, f"layer '{node.path}' is shared in the reference but not here")
            continue
        layer_pairs[node.layer_key] = cand_node.layer_key
        difference = _state_difference(
            reference.layer_state(node.layer_key), candidate.layer_state(cand_node.layer_key)
        )
        if difference is None:
            identical.add(node.index)
        else:
            note(node.index, f"layer '{node.path}' ({node.class_name}) {difference}")
    if first is None:
        return Alignment(mapping, identical, None)
    return Alignment(mapping, identical, first[1], first[0])


def _node_key(node: FlatNode, mapping: dict[int, int] | None) -> Any:
    if mapping is None:
        call = node.call
    else:
        call = map_refs(node.call, lambda ref: {REF_KEY: [mapping[ref[0]], ref[1]]})
    return json.dumps([normalized_layer_config(node.layer), call], sort_keys=True, default=str)


def _structure_difference(node: FlatNode, mapping: dict[int, int], ref_graph: FlatGraph, cand_graph: FlatGraph) -> str:
    mapped_parents = [mapping[p] for p in node.parents]
    rivals = [n for n in cand_graph.nodes if not n.is_input and n.parents == mapped_parents] or [
        n for n in cand_graph.nodes if not n.is_input and n.name == node.name
    ]
    if not rivals:
        return f"layer '{node.path}' ({node.class_name}) has no counterpart reading the same tensors"
    rival = rivals[0]
    if rival.class_name != node.class_name:
        return (
            f"layer '{node.path}' is a {node.class_name} in the reference but a {rival.class_name} "
            f"('{rival.path}') here"
        )
    ref_config = normalized_layer_config(node.layer)[2]
    cand_config = normalized_layer_config(rival.layer)[2]
    keys = sorted(k for k in set(ref_config) | set(cand_config) if ref_config.get(k) != cand_config.get(k))
    if keys:
        shown = ", ".join(f"{k}: {ref_config.get(k)!r} vs {cand_config.get(k)!r}" for k in keys[:3])
        return f"layer '{node.path}' ({node.class_name}) has another config ({shown})"
    return f"layer '{node.path}' ({node.class_name}) is called differently (other arguments or inputs)"


def _state_difference(reference: list[tuple[str, np.ndarray]], candidate: list[tuple[str, np.ndarray]]) -> str | None:
    if [name for name, _ in reference] != [name for name, _ in candidate]:
        return f"stores {len(reference)} weights in the reference and {len(candidate)} here"
    for (name, a), (_, b) in zip(reference, candidate, strict=True):
        if a.shape != b.shape or a.dtype != b.dtype:
            return f"weight '{name}' is {a.dtype}{list(a.shape)} in the reference and {b.dtype}{list(b.shape)} here"
        if a.tobytes() != b.tobytes():
            if name.startswith("assets/"):
                return f"asset '{name[7:]}' (a vocabulary) differs"
            if a.dtype.kind in "fiub":
                diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
                return f"weight '{name}' differs: max abs diff {diff:.6g}"
            return f"weight '{name}' differs"
    return None


# --------------------------------------------------------------------------- cuts


def cut_error(graph: FlatGraph, feature: TensorRef) -> str | None:
    """Return why ``feature`` does not split ``graph`` into backbone and head, or None.

    A valid cut: every node after it (the head) reads only the feature tensor or
    other head nodes, and every model output comes from the head.
    """
    index, output = feature
    if graph.nodes[index].is_input:
        return "it is a model input, so the backbone would be empty"
    backbone = graph.ancestors(index)
    head = {node.index for node in graph.nodes if node.index not in backbone}
    if not head:
        return "nothing comes after it, so the head would be empty"
    for node_index in sorted(head):
        node = graph.nodes[node_index]
        if node.is_input:
            return f"the head reads the model input '{node.name}' directly"
        for ref in graph.read_refs(node_index):
            if ref[0] in head or ref == feature:
                continue
            source = graph.nodes[ref[0]]
            if source.is_input:
                return f"layer '{node.path}' after it also reads the model input '{source.name}' directly"
            return (
                f"layer '{node.path}' after it also reads '{source.path}' (a skip connection around it)"
                if ref[0] != index
                else f"layer '{node.path}' reads another output of it"
            )
    for ref in graph.outputs:
        if ref[0] not in head:
            return f"the model output comes from '{graph.nodes[ref[0]].path}', before or at it"
    return None


def feature_candidates(graph: FlatGraph, nodes: Iterable[int]) -> list[TensorRef]:
    """Return the tensors of ``nodes`` that other nodes read, deepest node first."""
    consumers_refs: dict[int, set[TensorRef]] = {}
    for node in graph.nodes:
        for ref in iter_refs(node.call):
            consumers_refs.setdefault(ref[0], set()).add(ref)
    result = []
    for index in sorted(nodes, reverse=True):
        refs = sorted(consumers_refs.get(index, set()))
        if len(refs) == 1:
            result.append(refs[0])
    return result


def map_ref(alignment: Alignment, ref: TensorRef) -> TensorRef:
    """Return the candidate tensor that matches a reference tensor."""
    return (alignment.nodes[ref[0]], ref[1])


def require_identical_backbone(alignment: Alignment, graph: FlatGraph, feature: TensorRef, *, label: str) -> None:
    """Raise BackboneMismatchError unless every backbone node is identical in the candidate."""
    needed = graph.ancestors(feature[0])
    if needed <= alignment.identical:
        return
    message = alignment.first_difference or "its backbone does not line up with the reference"
    raise BackboneMismatchError(
        f"Expected {label} to share the reference backbone bit for bit, but {message}. The model was "
        "trained or fine-tuned past this backbone; import it separately or upload its backbone as a new version."
    )


# --------------------------------------------------------------------------- rebuilding


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


def import_registering_packages(config: Any) -> None:
    """Import keras-hub when a checked config names its allowed classes, so Keras can find them.

    Raises:
        UnsafeModelError: the model needs keras-hub and it is not installed.
    """
    if '"keras_hub>' not in json.dumps(config):
        return
    try:
        import keras_hub  # noqa: F401
    except ImportError as error:
        raise UnsafeModelError(
            "Expected keras-hub to be installed to load this model (it uses keras-hub classes), "
            "but it is not. Install the project's requirements."
        ) from error


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the checked ``config.json`` of a ``.keras`` file (zip and config checks only)."""
    return untrusted.read_config(path)


__all__ = [
    "Alignment",
    "FlatGraph",
    "FlatNode",
    "KerasArchive",
    "align",
    "build_submodel",
    "cut_error",
    "feature_candidates",
    "iter_refs",
    "load_layer_states",
    "map_ref",
    "import_registering_packages",
    "parse_config",
    "read_config",
    "require_identical_backbone",
    "submodel_layer_names",
]
