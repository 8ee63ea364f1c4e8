"""Freeze a backbone, or unfreeze its top N weight-bearing layers.

Only layers that carry weights count towards N: unfreezing Dropout, Activation or
Pooling unlocks nothing. Unfrozen BatchNormalization layers still run in inference
mode, because training code calls the backbone with ``training=False``
(see :mod:`modelhub.ml.train`). Each call reports the params that became trainable.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from modelhub.ml.errors import MLError
from modelhub.ml.inspect import iter_leaf_layers


def freeze_backbone(model: keras.Model) -> dict[str, Any]:
    """Make every layer of ``model`` non-trainable.

    Returns:
        ``{"trainable_params_before": int, "trainable_params_after": 0}``.

    Example:
        >>> freeze_backbone(backbone)["trainable_params_after"]
        0
    """
    before = _trainable_params(model)
    model.trainable = False
    return {"trainable_params_before": before, "trainable_params_after": _trainable_params(model)}


def unfreeze_top(model: keras.Model, num_layers: int) -> dict[str, Any]:
    """Freeze ``model``, then unfreeze its last ``num_layers`` weight-bearing layers.

    Args:
        model: the backbone (nested sub-models are walked layer by layer).
        num_layers: how many weight-bearing layers to unfreeze, counted from the top.

    Returns:
        ``{"unfrozen_layers": [names, top first], "num_unfrozen": int,
        "newly_trainable_params": int, "trainable_params": int,
        "weight_bearing_layers": int}``.

    Raises:
        MLError: ``num_layers`` is negative or larger than the number of weight-bearing layers.

    Example:
        >>> unfreeze_top(backbone, 2)["unfrozen_layers"]
        ['Conv_1_bn', 'Conv_1']
    """
    leaves = [layer for layer in iter_leaf_layers(model) if layer.weights]
    chosen = _top_weight_layers(model, leaves, num_layers)
    before = _trainable_params(model)
    model.trainable = True  # containers must be trainable for their children to train
    for layer in iter_leaf_layers(model):
        layer.trainable = False
    for layer in chosen:
        layer.trainable = True
    after = _trainable_params(model)
    return {
        "unfrozen_layers": [layer.name for layer in reversed(chosen)],
        "num_unfrozen": len(chosen),
        "newly_trainable_params": max(after - before, 0) if before else after,
        "trainable_params": after,
        "weight_bearing_layers": len(leaves),
    }


def top_weight_layers(model: keras.Model, num_layers: int) -> list[str]:
    """Return the names of the layers :func:`unfreeze_top` would unfreeze, top first (nothing changes).

    Example:
        >>> top_weight_layers(backbone, 2)
        ['Conv_1_bn', 'Conv_1']
    """
    leaves = [layer for layer in iter_leaf_layers(model) if layer.weights]
    return [layer.name for layer in reversed(_top_weight_layers(model, leaves, num_layers))]


def _top_weight_layers(model: keras.Model, leaves: list, num_layers: int) -> list:
    if not 0 <= num_layers <= len(leaves):
        raise MLError(
            f"Expected 0 <= num_layers <= {len(leaves)} (the weight-bearing layers of '{model.name}'), "
            f"received {num_layers}."
        )
    return leaves[len(leaves) - num_layers :] if num_layers else []


def _trainable_params(model: keras.Model) -> int:
    return int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))
