"""Image families: keras.applications bases (MobileNetV2, EfficientNetB0, ResNet50V2, ConvNeXtTiny)
with random weights and calibrated BatchNorm, nested as a sub-model or called layer by layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.real_models.family import IMAGE_SIZE, Family, _flat_models, _nested_models, _tasks_and_widths


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
