"""Sequence families: a Transformer encoder on tokens, a string model with a TextVectorization
vocabulary, a model with two named inputs, and a keras-hub BertBackbone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.real_models.family import (
    SEQUENCE_LENGTH,
    VOCABULARY_SIZE,
    Family,
    _flat_models,
    _head,
    _tasks_and_widths,
)


def _token_samples(length: int, vocabulary: int) -> Callable[[int, int], Any]:
    def sample_inputs(num_rows: int, seed: int = 0):
        import numpy as np

        return np.random.default_rng(seed).integers(0, vocabulary, (num_rows, length)).astype("int32")

    return sample_inputs


def transformer_tokens(num_models: int = 3, *, widths=None, seed: int = 0) -> Family:
    """A one-block Transformer encoder on token ids, from built-in Keras layers only.

    token_ids (int32, 16) -> Embedding -> MultiHeadAttention -> Add -> LayerNormalization
    -> Dense FFN -> Add -> LayerNormalization -> GlobalAveragePooling1D "pooled". No position
    embedding: one would need keras.ops on KerasTensors (operation nodes) or a custom layer.
    """
    import keras

    pairs = _tasks_and_widths(num_models, widths)
    keras.utils.set_random_seed(seed)
    L = keras.layers
    tokens = keras.Input((SEQUENCE_LENGTH,), dtype="int32", name="token_ids")
    x = L.Embedding(VOCABULARY_SIZE, 32, name="token_embedding")(tokens)
    attention = L.MultiHeadAttention(num_heads=2, key_dim=16, name="attention")(x, x)
    x = L.LayerNormalization(name="attention_norm")(L.Add(name="attention_residual")([x, attention]))
    ffn = L.Dense(64, activation="gelu", name="ffn_in")(x)
    ffn = L.Dense(32, name="ffn_out")(ffn)
    x = L.LayerNormalization(name="ffn_norm")(L.Add(name="ffn_residual")([x, ffn]))
    pooled = L.GlobalAveragePooling1D(name="pooled")(x)
    backbone = keras.Model(tokens, pooled, name="encoder")
    return Family(
        id="transformer_tokens",
        tasks=[t for t, _ in pairs],
        models=_flat_models(backbone, pairs, seed),
        feature_layer="pooled",
        auto_feature_layer="pooled",
        input_names=["token_ids"],
        sample_inputs=_token_samples(SEQUENCE_LENGTH, VOCABULARY_SIZE),
        perturb_layer="ffn_in",
        top_layers=["ffn_in", "ffn_out", "ffn_norm"],
        branch_point="attention_norm",  # the feed-forward residual reads it: nothing jumps over it
    )


SYLLABLES_A = ("ka", "lo", "mi", "su", "te", "ra", "no", "vi")
SYLLABLES_B = ("ba", "de", "fi", "go", "ku", "le", "mo", "pu", "ri", "zo")
WORDS = tuple(a + b for a in SYLLABLES_A for b in SYLLABLES_B)  # 80 made-up words


def _sentences(num_rows: int, seed: int, *, unknown: float = 0.0) -> list[str]:
    """Sentences of 3 to 24 words from WORDS; a fraction `unknown` of words is out of vocabulary."""
    import numpy as np

    rng = np.random.default_rng(seed)
    sentences = []
    for _ in range(num_rows):
        words = [WORDS[i] for i in rng.integers(0, len(WORDS), int(rng.integers(3, 25)))]
        words = [w if rng.random() >= unknown else f"zz{w}" for w in words]
        sentences.append(" ".join(words).capitalize() + ".")
    return sentences


def text_vectorization(num_models: int = 3, *, widths=None, seed: int = 0) -> Family:
    """String input: TextVectorization (adapted on a generated corpus) -> Embedding -> "pooled".

    text (string, shape (1,)) -> TextVectorization(max_tokens=500, output_sequence_length=16)
    -> Embedding -> GlobalAveragePooling1D "pooled". The vocabulary is part of the backbone.
    """
    import keras
    import numpy as np

    pairs = _tasks_and_widths(num_models, widths)
    keras.utils.set_random_seed(seed)
    L = keras.layers
    vectorizer = L.TextVectorization(max_tokens=500, output_sequence_length=SEQUENCE_LENGTH, name="vectorizer")
    vectorizer.adapt(np.array(_sentences(400, seed=1234)))
    text = keras.Input(shape=(1,), dtype="string", name="text")
    x = L.Embedding(
        vectorizer.vocabulary_size(),
        32,
        embeddings_initializer=keras.initializers.RandomNormal(stddev=1.0),
        name="word_embedding",
    )(vectorizer(text))
    pooled = L.GlobalAveragePooling1D(name="pooled")(x)
    backbone = keras.Model(text, pooled, name="text_encoder")

    def sample_inputs(num_rows: int, seed: int = 0):
        return np.array(_sentences(num_rows, seed, unknown=0.1), dtype=object).reshape(num_rows, 1)

    return Family(
        id="text_vectorization",
        tasks=[t for t, _ in pairs],
        models=_flat_models(backbone, pairs, seed),
        feature_layer="pooled",
        auto_feature_layer="pooled",
        input_names=["text"],
        sample_inputs=sample_inputs,
        perturb_layer="word_embedding",
        top_layers=["word_embedding"],
        branch_point="vectorizer",  # the trunk is the vocabulary lookup alone: 0 parameters
        notes={"vocabulary_size": vectorizer.vocabulary_size()},
    )


def two_inputs(num_models: int = 3, *, widths=None, seed: int = 0) -> Family:
    """Two named inputs: token_ids (int32, 12) -> Embedding -> pooling, numeric (float32, 5) -> Dense.

    Both branches are concatenated into Dense(16) "features".
    """
    import keras
    import numpy as np

    pairs = _tasks_and_widths(num_models, widths)
    keras.utils.set_random_seed(seed)
    L = keras.layers
    tokens = keras.Input((12,), dtype="int32", name="token_ids")
    numeric = keras.Input((5,), dtype="float32", name="numeric")
    text = L.GlobalAveragePooling1D(name="token_pool")(L.Embedding(VOCABULARY_SIZE, 8, name="token_embedding")(tokens))
    numbers = L.Dense(8, activation="relu", name="numeric_dense")(numeric)
    joined = L.Concatenate(name="joined")([text, numbers])
    features = L.Dense(16, activation="relu", name="features")(joined)
    backbone = keras.Model({"token_ids": tokens, "numeric": numeric}, features, name="two_input_backbone")

    def sample_inputs(num_rows: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        return {
            "token_ids": rng.integers(0, VOCABULARY_SIZE, (num_rows, 12)).astype("int32"),
            "numeric": rng.standard_normal((num_rows, 5)).astype("float32"),
        }

    return Family(
        id="two_inputs",
        tasks=[t for t, _ in pairs],
        models=_flat_models(backbone, pairs, seed),
        feature_layer="features",
        auto_feature_layer="features",
        input_names=["token_ids", "numeric"],
        sample_inputs=sample_inputs,
        perturb_layer="numeric_dense",
        top_layers=["features"],
        branch_point="joined",  # below it the two inputs run side by side: no single tensor cuts there
    )


def keras_hub_bert(num_models: int = 3, *, widths=None, seed: int = 0) -> Family:
    """A keras-hub BertBackbone built from a config (never a preset) nested in a functional model.

    Needs `keras_hub` importable: raises ImportError otherwise. The head reads the backbone's
    "pooled_output" from its dict of outputs.
    """
    import keras
    import keras_hub
    import numpy as np

    pairs = _tasks_and_widths(num_models, widths)
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=300,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        intermediate_dim=64,
        max_sequence_length=SEQUENCE_LENGTH,
    )
    models = []
    for index, (task, width) in enumerate(pairs):
        keras.utils.set_random_seed(seed + 1 + index)
        inputs = backbone.input
        features = backbone(inputs)["pooled_output"]
        models.append(keras.Model(inputs, _head(features, task=task, index=index, width=width), name=f"{task}_model"))

    def sample_inputs(num_rows: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        lengths = rng.integers(4, SEQUENCE_LENGTH + 1, num_rows)
        positions = np.arange(SEQUENCE_LENGTH)[None, :]
        padding_mask = (positions < lengths[:, None]).astype("int32")
        token_ids = rng.integers(1, 300, (num_rows, SEQUENCE_LENGTH)).astype("int32") * padding_mask
        segment_ids = ((positions >= lengths[:, None] // 2) * padding_mask).astype("int32")
        return {"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": padding_mask}

    return Family(
        id="keras_hub_bert",
        tasks=[t for t, _ in pairs],
        models=models,
        feature_layer=backbone.name,
        auto_feature_layer=backbone.name,
        input_names=["token_ids", "segment_ids", "padding_mask"],
        sample_inputs=sample_inputs,
        perturb_layer="transformer_layer_1",
        top_layers=["pooled_dense"],
        branch_point=None,  # a keras-hub model is stored by its arguments: no layer graph to cut
        notes={"backbone": backbone.name, "feature_output": "pooled_output"},
    )
