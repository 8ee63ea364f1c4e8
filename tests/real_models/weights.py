"""Weights of real models: compare the backbones of a family, change one element of a saved model,
and fine-tune a model's top as users do (what the negative and branch tests need).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def leaf_layers(layer) -> list:
    """Return the layers under `layer` that are not models, depth first (nested models opened)."""
    import keras

    found = []
    for sub in getattr(layer, "layers", []):
        if isinstance(sub, keras.Model):
            found.extend(leaf_layers(sub))
        else:
            found.append(sub)
    return found


def find_leaf_layer(model, name: str):
    """Return the layer called `name` anywhere inside `model` (nested models and keras-hub layers too)."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if layer.name == name:
            return layer
    raise KeyError(f"No layer {name!r} in model {model.name!r}.")


def backbone_weights(model, tasks) -> dict[str, Any]:
    """Return {'<layer path>/<index>': array} for every weight outside the heads.

    Head layers are those whose name starts with a task. Nested models are transparent in the
    path, so a nested and a flattened backbone give the same keys.
    """
    import keras
    import numpy as np

    prefixes = tuple(f"{task}_" for task in tasks)
    weights: dict[str, Any] = {}

    def visit(layer, path: str) -> None:
        children = list(layer._flatten_layers(include_self=False, recursive=False))
        inner = {id(v) for child in children for v in child.weights}
        own = [v for v in layer.weights if id(v) not in inner]
        for index, variable in enumerate(own):
            weights[f"{path}{index}"] = np.asarray(variable.numpy())
        for child in children:
            if child.name.startswith(prefixes):
                continue
            visit(child, path if isinstance(child, keras.Model) else f"{path}{child.name}/")

    visit(model, "")
    return weights


def save_with_one_weight_changed(source: Path, destination: Path, *, layer_name: str) -> dict[str, Any]:
    """Load `source`, change ONE element of `layer_name`'s first weight by one float32 ulp, save.

    Returns:
        {"layer", "weight", "index", "before", "after"}: what was changed.
    """
    import keras
    import numpy as np

    model = keras.saving.load_model(source, safe_mode=True)
    layer = find_leaf_layer(model, layer_name)
    variable = layer.weights[0]
    values = np.array(variable.numpy())
    flat = values.reshape(-1)
    index = int(np.argmax(np.abs(flat) > 0))
    before = flat[index]
    flat[index] = np.nextafter(before, np.float32(np.inf), dtype=np.float32)
    variable.assign(values)
    model.save(destination)
    return {
        "layer": layer_name,
        "weight": variable.path,
        "index": index,
        "before": float(before),
        "after": float(flat[index]),
    }


def fine_tune_top(
    source: Path, destination: Path, *, layer_names: list[str], seed: int, scale: float = 0.02
) -> dict[str, int]:
    """Save a copy of `source` whose `layer_names` moved as in a fine-tune of the backbone's top.

    Every weight of those leaf layers moves by `scale` x its spread (a BatchNormalization moving
    variance by a factor within 1 ± 3 x `scale`), with a fixed seed; every other weight stays
    bit-identical.

    Returns:
        {layer name: number of weight elements changed}.
    """
    import keras
    import numpy as np

    model = keras.saving.load_model(source, safe_mode=True)
    rng = np.random.default_rng(seed)
    changed = {}
    for name in layer_names:
        layer = find_leaf_layer(model, name)
        changed[name] = 0
        for variable in layer.weights:
            values = np.asarray(variable.numpy())
            spread = float(np.std(values)) or 1.0
            noise = rng.standard_normal(values.shape).astype(values.dtype)
            if "variance" in variable.name:  # stays positive
                variable.assign(values * (1 + np.asarray(scale, values.dtype) * np.clip(noise, -3, 3)))
            else:
                variable.assign(values + noise * np.asarray(scale * spread, values.dtype))
            changed[name] += int(np.sum(variable.numpy() != values))
    model.save(destination)
    return changed
