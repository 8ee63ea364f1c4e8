"""Families of full Keras models built from architectures the team did not design.

The conformance tests (tests/heads/test_real_models.py) import K full models that share one
backbone and check the assembled SavedModel against them. The tiny models of
tests/model_factory.py are shaped like our own code expects; these are shaped like what users
bring: keras.applications bases nested as a sub-model (the transfer-learning guide) or called
layer by layer, a Transformer encoder, a string model with a TextVectorization vocabulary,
two named inputs, and a keras-hub BertBackbone.

Every family builds its backbone ONCE (fixed seed, `weights=None`: nothing is downloaded) and
puts K heads of different widths on it, so the K models' backbone weights are bit-identical.

The parts: family.py (``Family``, inputs, heads), images.py (keras.applications bases),
sequences.py (Transformer, TextVectorization, two inputs, keras-hub BERT), weights.py (compare
and change backbone weights, fine-tune a top). This module names every family in ``BUILDERS``
and re-exports what the tests use. Self-check (build, save, reload with safe_mode, compare,
check the backbones are identical):

    .venv/bin/python -m tests.real_models [FAMILY_ID ...]

Imports Keras lazily so that importing this package does not load TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.real_models.family import (
    IMAGE_SIZE,
    SEQUENCE_LENGTH,
    TASKS,
    VOCABULARY_SIZE,
    WIDTHS,
    Family,
    model_inputs,
    signature_arrays,
)
from tests.real_models.images import (
    _application_base,
    calibrate_batch_norm,
    convnexttiny,
    efficientnetb0,
    mobilenetv2_flat,
    mobilenetv2_mixed,
    mobilenetv2_nested,
    resnet50v2,
)
from tests.real_models.sequences import keras_hub_bert, text_vectorization, transformer_tokens, two_inputs
from tests.real_models.weights import (
    backbone_weights,
    find_leaf_layer,
    fine_tune_top,
    leaf_layers,
    save_with_one_weight_changed,
)

BUILDERS: dict[str, Callable[..., Family]] = {
    "mobilenetv2_nested": mobilenetv2_nested,
    "mobilenetv2_flat": mobilenetv2_flat,
    "mobilenetv2_mixed": mobilenetv2_mixed,
    "efficientnetb0": efficientnetb0,
    "resnet50v2": resnet50v2,
    "convnexttiny": convnexttiny,
    "transformer_tokens": transformer_tokens,
    "text_vectorization": text_vectorization,
    "two_inputs": two_inputs,
    "keras_hub_bert": keras_hub_bert,
}


def build_family(family_id: str, num_models: int = 3, **kwargs) -> Family:
    """Build the family `family_id` (a key of BUILDERS).

    Clears Keras' session first, so that automatic layer names (e.g. the pooling layer's
    `global_average_pooling2d`) do not depend on what the process built before.
    """
    import keras

    keras.backend.clear_session()
    return BUILDERS[family_id](num_models, **kwargs)


__all__ = [
    "BUILDERS",
    "IMAGE_SIZE",
    "SEQUENCE_LENGTH",
    "TASKS",
    "VOCABULARY_SIZE",
    "WIDTHS",
    "Family",
    "_application_base",
    "backbone_weights",
    "build_family",
    "calibrate_batch_norm",
    "convnexttiny",
    "efficientnetb0",
    "find_leaf_layer",
    "fine_tune_top",
    "keras_hub_bert",
    "leaf_layers",
    "mobilenetv2_flat",
    "mobilenetv2_mixed",
    "mobilenetv2_nested",
    "model_inputs",
    "resnet50v2",
    "save_with_one_weight_changed",
    "signature_arrays",
    "text_vectorization",
    "transformer_tokens",
    "two_inputs",
]
