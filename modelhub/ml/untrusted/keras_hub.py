"""The weights an allow-listed keras-hub object declares in its config, counted before Keras builds it.

Why this exists: a keras-hub backbone's config holds numbers, not weight shapes
(``BertBackbone(vocabulary_size=..., hidden_dim=...)``), and its ``from_config`` allocates every
variable while the model is built, before any check on the stored weights can run. A forged config
(``vocabulary_size=10**9, hidden_dim=4096``) would allocate terabytes. The config reader
(:func:`modelhub.ml.untrusted.config.check_config_safe`) adds up what these formulas give for every
allow-listed keras-hub object and refuses the file above ``max_declared_bytes``, the ceiling the
weights file is held to, and any declared layer count above ``max_layers``.

The formulas are keras-hub 0.x's own layer shapes (checked against ``count_params()`` in
tests/ml/test_keras_hub_declared.py); a value that is not a number counts as 0 (Keras refuses it).
"""

from __future__ import annotations

import math

# Bytes per declared parameter: float32 variables (mixed-precision policies keep float32 variables).
_ITEM_BYTES = 4


def _number(config: dict, key: str, default: int = 0) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    if isinstance(value, float):
        if not math.isfinite(value):
            return 10**30  # refused by any ceiling
        value = int(value)
    return max(int(value), 0)


def _last_input_dim(node: dict) -> int:
    shape = (node.get("build_config") or {}).get("input_shape") if isinstance(node.get("build_config"), dict) else None
    if isinstance(shape, (list, tuple)) and shape:
        last = shape[-1]
        if isinstance(last, (int, float)) and not isinstance(last, bool):
            return max(int(last), 0)
    return 0


def _encoder_params(hidden: int, intermediate: int) -> int:
    """One transformer encoder block: Q, K, V, output projections, two layer norms, the feed-forward pair."""
    return 4 * (hidden * hidden + hidden) + 4 * hidden + 2 * hidden * intermediate + intermediate + hidden


def _bert_backbone(config: dict) -> tuple[int, int]:
    hidden, layers = _number(config, "hidden_dim"), _number(config, "num_layers")
    embeddings = (
        _number(config, "vocabulary_size")
        + _number(config, "max_sequence_length", 512)
        + _number(config, "num_segments", 2)
        + 2
    ) * hidden
    pooler = hidden * hidden + hidden
    return embeddings + layers * _encoder_params(hidden, _number(config, "intermediate_dim")) + pooler, layers


def _bert_text_classifier(config: dict) -> tuple[int, int]:
    backbone = config.get("backbone")
    inner = backbone.get("config") if isinstance(backbone, dict) and isinstance(backbone.get("config"), dict) else {}
    classes = _number(config, "num_classes")
    return classes * _number(inner, "hidden_dim") + classes, 0  # the backbone is counted where it sits


def declared_params(node: dict) -> tuple[int, int]:
    """Return ``(parameters, layers)`` that an allow-listed keras-hub object's config declares ((0, 0) for others).

    Example:
        >>> declared_params({"registered_name": "keras_hub>ReversibleEmbedding",
        ...                  "config": {"input_dim": 10, "output_dim": 4, "tie_weights": False}})
        (80, 0)
    """
    name = node.get("registered_name")
    config = node.get("config") if isinstance(node.get("config"), dict) else {}
    if name == "keras_hub>BertBackbone":
        return _bert_backbone(config)
    if name == "keras_hub>BertTextClassifier":
        return _bert_text_classifier(config)
    if name == "keras_hub>TransformerEncoder":
        return _encoder_params(_last_input_dim(node), _number(config, "intermediate_dim")), 1
    if name == "keras_hub>PositionEmbedding":
        return _number(config, "sequence_length") * _last_input_dim(node), 0
    if name == "keras_hub>TokenAndPositionEmbedding":
        dim = _number(config, "embedding_dim")
        return (_number(config, "vocabulary_size") + _number(config, "sequence_length")) * dim, 0
    if name == "keras_hub>ReversibleEmbedding":
        table = _number(config, "input_dim") * _number(config, "output_dim")
        return table * (1 if config.get("tie_weights", True) else 2), 0
    return 0, 0


def declared_bytes(node: dict) -> int:
    """Return the bytes of weights an allow-listed keras-hub object's config declares."""
    dtype = node.get("config", {}).get("dtype") if isinstance(node.get("config"), dict) else None
    policy = dtype
    if isinstance(dtype, dict):
        policy = dtype.get("config", {}).get("name") if isinstance(dtype.get("config"), dict) else None
    item = 8 if isinstance(policy, str) and "float64" in policy else _ITEM_BYTES
    return declared_params(node)[0] * item
