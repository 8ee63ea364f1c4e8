"""One head version as one plain Keras model: backbone (its trunk and the head's branch) then the head.

MLflow's registry client downloads a model version as a file a team loads without ModelHub, so
the parts ModelHub keeps apart (the backbone stored once, a branch owned by the head, the head)
are composed into one functional Keras model here, saved as ``.keras``, loaded back with
``keras.saving.load_model`` (safe mode) and checked against the parts run one after the other
on probe rows. Nothing here knows Django.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from modelhub.ml.errors import MLError
from modelhub.ml.probes import check_close, probe_inputs_for


class FullModelError(MLError):
    """The parts of a head version cannot be composed into one Keras model that reproduces them."""


def compose_full_model(backbone: Any, head: Any, *, branch: Any = None, after_layer: str = "", name: str = "model"):
    """Return one functional Keras model computing ``head(branch(trunk(x)))`` (or ``head(backbone(x))``).

    Args:
        backbone: the backbone (a functional Keras model ending at its feature layer).
        head: the head (a Keras model on the features).
        branch: the head's branch (a Keras model from ``after_layer``'s tensor to the features), or None.
        after_layer: the backbone layer the branch starts after (only with ``branch``).
        name: the composed model's name.

    Example:
        >>> model = compose_full_model(backbone, head, name="vision.sentiment")
        >>> model.save("model.keras")
    """
    import keras

    inputs = backbone.inputs
    try:
        if branch is None:
            features = backbone.outputs[0] if len(backbone.outputs) == 1 else backbone(inputs)
        else:
            features = branch(backbone.get_layer(after_layer).output)
        outputs = head(features)
    except (ValueError, TypeError, KeyError) as exc:
        where = f"its branch after '{after_layer}'" if branch is not None else "the backbone's features"
        raise FullModelError(
            f"Cannot put the head on {where}: {exc}. The head must take the backbone's feature tensor."
        ) from exc
    return keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs, name=_keras_name(name))


def reference_outputs(
    backbone: Any, head: Any, inputs: Any, *, branch: Any = None, after_layer: str = ""
) -> np.ndarray:
    """Run the parts one after the other (not the composed graph): the figure the file must reproduce."""
    import keras

    if branch is None:
        features = backbone(inputs, training=False)
    else:
        trunk = keras.Model(backbone.inputs, backbone.get_layer(after_layer).output)
        features = branch(trunk(inputs, training=False), training=False)
    return np.asarray(head(features, training=False))


def save_full_model(
    backbone: Any, head: Any, path: Path, *, branch: Any = None, after_layer: str = "", name: str = "model"
) -> dict[str, Any]:
    """Compose, save to ``path`` (.keras), reload it with keras.saving.load_model and verify it.

    Returns:
        ``{"max_abs_diff", "max_rel_diff", "tolerance", "probe_rows", "inputs", "output_shape"}``; ``inputs``
        lists ``{"name", "dtype", "shape"}`` (-1 for an open dimension).

    Raises:
        FullModelError: the parts do not compose, or the saved file does not reproduce them.
    """
    import keras

    model = compose_full_model(backbone, head, branch=branch, after_layer=after_layer, name=name)
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    probe = probe_inputs_for(backbone, num_rows=4, seed=7)
    expected = reference_outputs(backbone, head, probe, branch=branch, after_layer=after_layer)
    got = np.asarray(reloaded(probe, training=False))
    report = check_close(expected, got, what="the composed model", error=FullModelError)
    return {
        **report,
        "probe_rows": 4,
        "inputs": [
            {
                "name": tensor.name,
                "dtype": str(tensor.dtype),
                "shape": [-1 if d is None else int(d) for d in tensor.shape],
            }
            for tensor in backbone.inputs
        ],
        "output_shape": [-1, *[int(d) for d in got.shape[1:]]],
    }


def _keras_name(name: str) -> str:
    """A Keras model name from a registered model name ('vision.sentiment' -> 'vision_sentiment')."""
    return "".join(char if char.isalnum() or char == "_" else "_" for char in name) or "model"
