"""Families of full Keras models built from architectures the team did not design.

The conformance tests (tests/heads/test_real_models.py) import K full models that share one
backbone and check the assembled SavedModel against them. The tiny models of
tests/model_factory.py are shaped like our own code expects; these are shaped like what users
bring: keras.applications bases nested as a sub-model (the transfer-learning guide) or called
layer by layer, a Transformer encoder, a string model with a TextVectorization vocabulary,
two named inputs, and a keras-hub BertBackbone.

Every family builds its backbone ONCE (fixed seed, `weights=None`: nothing is downloaded) and
puts K heads of different widths on it, so the K models' backbone weights are bit-identical.

Self-check (build, save, reload with safe_mode, compare, check the backbones are identical):

    .venv/bin/python -m tests.real_models [FAMILY_ID ...]

Imports Keras lazily so that importing this module does not load TensorFlow.
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TASKS = ("topic", "sentiment", "quality", "intent", "urgency")
WIDTHS = (3, 5, 2, 4, 6)
IMAGE_SIZE = 32
SEQUENCE_LENGTH = 16
VOCABULARY_SIZE = 200


@dataclass
class Family:
    """K full models sharing one backbone, plus what the tests need to know about them.

    Attributes:
        id: short id, e.g. "mobilenetv2_nested".
        tasks: the task of each model; its file is saved as `<task>.keras`.
        models: the full models, one per task, in the same order.
        feature_layer: the layer to name in the import (None: the import must choose).
        auto_feature_layer: the layer the import should choose when none is named
            (None where the choice is ambiguous, e.g. nested and flat models mixed).
        input_names: the backbone's input names; a SavedModel of a backbone with several
            inputs is called with each one by this name.
        sample_inputs: `sample_inputs(num_rows, seed)` returns inputs for the models: an array
            (np.array of str objects for text) or a dict by input name.
        perturb_layer: a backbone layer (leaf name) whose weights the negative test changes.
        top_layers: the backbone's top weight-bearing layers (leaf names) that a fine-tune of
            its top changes (see :func:`fine_tune_top`); empty where not set.
        branch_point: the layer just below ``top_layers`` where such a model's branch starts,
            read off the architecture; None where no branch is possible (the import refuses).
    """

    id: str
    tasks: list[str]
    models: list[Any]
    feature_layer: str | None
    auto_feature_layer: str | None
    input_names: list[str]
    sample_inputs: Callable[[int, int], Any]
    perturb_layer: str | None = None
    top_layers: list[str] = field(default_factory=list)
    branch_point: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def output_widths(self) -> list[int]:
        return [int(model.outputs[0].shape[-1]) for model in self.models]

    def save(self, folder: Path) -> list[Path]:
        """Save each full model as `<folder>/<task>.keras`; return the paths in task order."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for task, model in zip(self.tasks, self.models, strict=True):
            path = folder / f"{task}.keras"
            model.save(path)
            paths.append(path)
        return paths

    def predict(self, index: int, inputs: Any):
        """Return model `index`'s outputs on `inputs` (inference mode, as a graph) as float32.

        As a graph, like every served model: on CPU, graph-mode op fusions round differently
        from eager execution (EfficientNetB0 alone: 1.7e-5 relative), which is not the
        assembly's doing.
        """
        import numpy as np
        import tensorflow as tf

        model = self.models[index]
        graph = tf.function(lambda batch: model(batch, training=False))
        return np.asarray(graph(model_inputs(inputs)), dtype="float32")


def model_inputs(inputs: Any) -> Any:
    """Turn sample inputs into what a Keras model call takes (strings become tf.string)."""
    import numpy as np

    if isinstance(inputs, dict):
        return {name: model_inputs(value) for name, value in inputs.items()}
    array = np.asarray(inputs)
    if array.dtype == object or array.dtype.kind == "U":
        import tensorflow as tf

        return tf.constant(array.astype(str))
    return array


def signature_arrays(inputs: Any) -> dict[str, Any]:
    """Return the SavedModel `serving_default` keyword arrays for sample inputs (no pickles).

    One input is passed as `inputs`; several inputs by their input names. Strings become
    fixed-width unicode arrays, which np.save writes without pickling and tf.constant reads
    as tf.string.
    """
    import numpy as np

    named = inputs if isinstance(inputs, dict) else {"inputs": inputs}
    arrays = {}
    for name, value in named.items():
        array = np.asarray(value)
        arrays[name] = array.astype(str) if array.dtype == object else array
    return arrays


# --- Heads ---------------------------------------------------------------------------------


def _head(features, *, task: str, index: int, width: int):
    """Apply head number `index` on `features`: softmax Dense, an MLP, or a linear Dense."""
    import keras

    kind = index % 3
    if kind == 1:
        hidden = keras.layers.Dense(16, activation="relu", name=f"{task}_hidden")(features)
        return keras.layers.Dense(width, activation="softmax", name=f"{task}_out")(hidden)
    activation = "softmax" if kind == 0 else None
    return keras.layers.Dense(width, activation=activation, name=f"{task}_out")(features)


def _tasks_and_widths(num_models: int, widths) -> list[tuple[str, int]]:
    widths = list(widths or WIDTHS[:num_models])
    if len(widths) != num_models or num_models > len(TASKS):
        raise ValueError(f"Give one width per model and at most {len(TASKS)} models; got {widths!r}.")
    return list(zip(TASKS[:num_models], widths, strict=True))


def _nested_models(backbone, input_tensor_factory, pairs, seed: int) -> list:
    """Full models with `backbone` nested as a sub-model: inputs -> backbone(inputs) -> head."""
    import keras

    models = []
    for index, (task, width) in enumerate(pairs):
        keras.utils.set_random_seed(seed + 1 + index)
        inputs = input_tensor_factory()
        features = backbone(inputs, training=False)
        models.append(keras.Model(inputs, _head(features, task=task, index=index, width=width), name=f"{task}_model"))
    return models


def _flat_models(backbone, pairs, seed: int) -> list:
    """Full models on the backbone's own layers, called directly: Model(backbone.input, head(backbone.output))."""
    import keras

    models = []
    for index, (task, width) in enumerate(pairs):
        keras.utils.set_random_seed(seed + 1 + index)
        outputs = _head(backbone.output, task=task, index=index, width=width)
        models.append(keras.Model(backbone.input, outputs, name=f"{task}_model"))
    return models


# --- Image families: keras.applications --------------------------------------------------


def _image_samples(size: int) -> Callable[[int, int], Any]:
    def sample_inputs(num_rows: int, seed: int = 0):
        import numpy as np

        rng = np.random.default_rng(seed)
        return rng.uniform(0.0, 255.0, (num_rows, size, size, 3)).astype("float32")

    return sample_inputs


def _application_base(constructor: str, size: int, seed: int, **kwargs):
    """Build a keras.applications base with random weights and calibrated batch statistics."""
    import keras

    keras.utils.set_random_seed(seed)
    build = getattr(keras.applications, constructor)
    base = build(input_shape=(size, size, 3), include_top=False, weights=None, pooling="avg", **kwargs)
    calibrate_batch_norm(base, _image_samples(size)(32, seed + 100))
    return base


def calibrate_batch_norm(model, inputs) -> None:
    """Set every BatchNormalization's moving mean and variance to its batch statistics on `inputs`.

    With fresh moving statistics (mean 0, variance 1) a deep random network's activations
    shrink layer after layer: MobileNetV2's features come out near 1e-10 and every head gives
    the same output for any image, which would hide a wrong backbone. One training-mode pass
    with momentum 0 stores the statistics a trained model would have.
    """
    import keras

    layers = [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    try:
        model(inputs, training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum


def _image_input(size: int):
    import keras

    return lambda: keras.Input((size, size, 3), name="image")


MOBILENETV2_TOP = [  # the last inverted-residual block and the final 1x1 convolution
    "block_16_expand",
    "block_16_expand_BN",
    "block_16_depthwise",
    "block_16_depthwise_BN",
    "block_16_project",
    "block_16_project_BN",
    "Conv_1",
    "Conv_1_bn",
]


def mobilenetv2_nested(num_models: int = 3, *, widths=None, seed: int = 0) -> Family:
    """MobileNetV2 (alpha 0.35, 32x32) nested as a sub-model, as in the Keras transfer-learning guide."""
    pairs = _tasks_and_widths(num_models, widths)
    base = _application_base("MobileNetV2", IMAGE_SIZE, seed, alpha=0.35)
    models = _nested_models(base, _image_input(IMAGE_SIZE), pairs, seed)
    return Family(
        id="mobilenetv2_nested",
        tasks=[t for t, _ in pairs],
        models=models,
        feature_layer=base.name,
        auto_feature_layer=base.name,
        input_names=["image"],
        sample_inputs=_image_samples(IMAGE_SIZE),
        perturb_layer="block_5_depthwise",
        top_layers=MOBILENETV2_TOP,
        branch_point="block_15_add",  # the output of block 15's residual Add
        notes={"backbone": base.name, "pooling_layer": base.layers[-1].name},
    )


def mobilenetv2_flat(num_models: int = 3, *, widths=None, seed: int = 0) -> Family:
    """MobileNetV2's own layers called directly: keras.Model(base.input, head(base.output))."""
    pairs = _tasks_and_widths(num_models, widths)
    base = _application_base("MobileNetV2", IMAGE_SIZE, seed, alpha=0.35)
    models = _flat_models(base, pairs, seed)
    pooling = base.layers[-1].name
    return Family(
        id="mobilenetv2_flat",
        tasks=[t for t, _ in pairs],
        models=models,
        feature_layer=pooling,
        auto_feature_layer=pooling,
        input_names=[base.inputs[0].name],
        sample_inputs=_image_samples(IMAGE_SIZE),
        perturb_layer="block_5_depthwise",
        top_layers=MOBILENETV2_TOP,
        branch_point="block_15_add",  # the output of block 15's residual Add
        notes={"backbone": base.name, "pooling_layer": pooling},
    )


def mobilenetv2_mixed(num_models: int = 3, *, widths=None, seed: int = 0) -> Family:
    """One MobileNetV2 base shared by nested and flattened models in the same import.

    Models at even positions nest the base; odd positions call its layers directly. The
    feature layer is the pooling layer INSIDE the base, which names the same tensor in both.
    """
    pairs = _tasks_and_widths(num_models, widths)
    base = _application_base("MobileNetV2", IMAGE_SIZE, seed, alpha=0.35)
    nested = _nested_models(base, _image_input(IMAGE_SIZE), pairs, seed)
    flat = _flat_models(base, pairs, seed)
    models = [nested[i] if i % 2 == 0 else flat[i] for i in range(num_models)]
    pooling = base.layers[-1].name
    return Family(
        id="mobilenetv2_mixed",
        tasks=[t for t, _ in pairs],
        models=models,
        feature_layer=pooling,
        auto_feature_layer=None,
        input_names=["image"],
        sample_inputs=_image_samples(IMAGE_SIZE),
        perturb_layer="block_5_depthwise",
        top_layers=MOBILENETV2_TOP,
        branch_point="block_15_add",  # the output of block 15's residual Add
        notes={"backbone": base.name, "pooling_layer": pooling, "shapes": ["nested", "flat"] * num_models},
    )


def _nested_application(family_id: str, constructor: str, perturb_layer: str, num_models, widths, seed) -> Family:
    pairs = _tasks_and_widths(num_models, widths)
    base = _application_base(constructor, IMAGE_SIZE, seed)
    models = _nested_models(base, _image_input(IMAGE_SIZE), pairs, seed)
    return Family(
        id=family_id,
        tasks=[t for t, _ in pairs],
        models=models,
        feature_layer=base.name,
        auto_feature_layer=base.name,
        input_names=["image"],
        sample_inputs=_image_samples(IMAGE_SIZE),
        perturb_layer=perturb_layer,
        notes={"backbone": base.name, "pooling_layer": base.layers[-1].name},
    )


def efficientnetb0(num_models: int = 3, *, widths=None, seed: int = 0) -> Family:
    """EfficientNetB0 (32x32, its Rescaling + Normalization inside) nested as a sub-model."""
    return _nested_application("efficientnetb0", "EfficientNetB0", "block3a_dwconv", num_models, widths, seed)


def resnet50v2(num_models: int = 3, *, widths=None, seed: int = 0) -> Family:
    """ResNet50V2 (32x32, ~24M parameters) nested as a sub-model."""
    return _nested_application("resnet50v2", "ResNet50V2", "conv3_block1_1_conv", num_models, widths, seed)


def convnexttiny(num_models: int = 3, *, widths=None, seed: int = 0) -> Family:
    """ConvNeXtTiny (32x32, ~28M parameters, LayerScale layers) nested as a sub-model."""
    return _nested_application(
        "convnexttiny", "ConvNeXtTiny", "convnext_tiny_stage_1_block_0_depthwise_conv", num_models, widths, seed
    )


# --- Sequence families: Keras layers only ------------------------------------------------


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


# --- Weights: compare backbones, change one element -----------------------------------------


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


# --- Self-check -------------------------------------------------------------------------------


def check_family(family_id: str, folder: Path) -> dict[str, Any]:
    """Build, save, reload (safe_mode) and compare a family; check its backbones are bit-identical."""
    import keras
    import numpy as np

    started = time.monotonic()
    family = build_family(family_id)
    built = time.monotonic() - started
    paths = family.save(folder / family_id)
    saved = time.monotonic() - started - built
    inputs = family.sample_inputs(6, 0)
    loaded = [keras.saving.load_model(path, safe_mode=True) for path in paths]
    max_diff = 0.0
    spread = np.inf
    for index, model in enumerate(loaded):
        expected = family.predict(index, inputs)
        got = np.asarray(model(model_inputs(inputs), training=False))
        assert got.shape == (6, family.output_widths[index]), (family_id, got.shape)
        assert np.all(np.isfinite(got)), family_id
        max_diff = max(max_diff, float(np.max(np.abs(got - expected))))
        spread = min(spread, float(np.max(np.std(expected, axis=0))))
    reference = backbone_weights(loaded[0], family.tasks)
    assert reference, f"{family_id}: no backbone weights found"
    for path, model in zip(paths[1:], loaded[1:], strict=True):
        other = backbone_weights(model, family.tasks)
        assert other.keys() == reference.keys(), (family_id, path.name, set(other) ^ set(reference))
        for key, value in reference.items():
            assert value.tobytes() == other[key].tobytes(), f"{family_id}: {path.name} differs at {key}"
    changed = folder / family_id / "changed.keras"
    change = save_with_one_weight_changed(paths[1], changed, layer_name=family.perturb_layer)
    changed_weights = backbone_weights(keras.saving.load_model(changed, safe_mode=True), family.tasks)
    differing = [
        (key, int(np.sum(value != changed_weights[key])))
        for key, value in reference.items()
        if value.tobytes() != changed_weights[key].tobytes()
    ]
    assert len(differing) == 1 and differing[0][1] == 1, (family_id, differing)
    assert spread > 1e-3, f"{family_id}: outputs barely depend on the inputs ({spread})"
    assert differing[0][0].startswith(f"{family.perturb_layer}/"), (family_id, differing)
    members = zipfile.ZipFile(paths[0]).namelist()
    return {
        "family": family_id,
        "feature_layer": family.feature_layer,
        "widths": family.output_widths,
        "build_s": round(built, 1),
        "save_s": round(saved, 1),
        "total_s": round(time.monotonic() - started, 1),
        "file_mb": [round(p.stat().st_size / 1e6, 2) for p in paths],
        "params": family.models[0].count_params(),
        "reload_max_abs_diff": max_diff,
        "min_output_spread": spread,
        "backbone_weights": len(reference),
        "changed": change["weight"],
        "archive": members,
        **family.notes,
    }


def main(argv: list[str]) -> int:
    import json
    import tempfile

    family_ids = argv or list(BUILDERS)
    with tempfile.TemporaryDirectory(prefix="real-models-") as tmp:
        for family_id in family_ids:
            try:
                result = check_family(family_id, Path(tmp))
            except ImportError as exc:
                result = {"family": family_id, "skipped": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
