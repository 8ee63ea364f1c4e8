"""Benchmark function-preserving growth on MobileNetV2 and an MLP, and the seed's ones-conv trick.

Usage: python bench/grow.py   (prints ONE JSON object as its last line)
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import randomize_batch_norm  # noqa: E402
from modelhub.ml.grow import compare_outputs, grow_model  # noqa: E402


def mobilenet() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), weights=None, include_top=False, pooling="avg")
    randomize_batch_norm(model, seed=0)  # realistic, non-trivial BatchNorm statistics
    return model


def mlp() -> keras.Model:
    keras.utils.set_random_seed(1)
    inputs = keras.Input((32,), name="x")
    x = keras.layers.Dense(64, activation="relu", name="d1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Dense(48, name="d2")(x)
    x = keras.layers.Activation("relu", name="act2")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="out")(x), name="mlp")


def seed_ones_conv(model: keras.Model, after: str) -> keras.Model:
    """The seed article's trick: x * Conv2D(ones, relu)(x). Not function-preserving."""

    def call_function(layer, *args, **kwargs):
        out = layer(*args, **kwargs)
        if layer.name == after:
            conv = keras.layers.Conv2D(
                out.shape[-1], 3, padding="same", activation="relu", kernel_initializer="ones", name="seed_ones_conv"
            )
            out = keras.layers.Multiply(name="seed_multiply")([out, conv(out)])
        return out

    grown = keras.models.clone_model(model, call_function=call_function)
    for layer in model.layers:
        if layer.weights:
            grown.get_layer(layer.name).set_weights(layer.get_weights())
    return grown


# Layers downstream of each MobileNetV2 growth, where the activations still depend on the input.
INNER_PROBES = {"conv_identity": "block_3_depthwise", "residual": "block_6_expand", "widen": "block_2_project"}


def inner_diff(original: keras.Model, grown: keras.Model, layer: str, inputs: np.ndarray) -> tuple[float, float]:
    """Max abs and relative difference of one inner layer's output between two models."""
    before = np.asarray(keras.Model(original.inputs, original.get_layer(layer).output)(inputs))
    after = np.asarray(keras.Model(grown.inputs, grown.get_layer(layer).output)(inputs))
    diff = float(np.max(np.abs(after - before)))
    return diff, diff / float(np.max(np.abs(before)))


def main() -> None:
    report: dict = {"machine": f"{os.cpu_count()} CPU cores, no GPU"}
    images = np.random.default_rng(2).standard_normal((4, 96, 96, 3)).astype("float32")
    vectors = np.random.default_rng(3).standard_normal((16, 32)).astype("float32")
    cases = {
        "mobilenetv2": (
            mobilenet(),
            images,
            {
                "dense_identity": {"after": "global_average_pooling2d"},
                "conv_identity": {"after": "block_3_expand_relu"},
                "residual": {"after": "block_5_project_BN"},
                "widen": {"layer": "block_2_expand", "units": 200},
            },
        ),
        "mlp": (
            mlp(),
            vectors,
            {
                "dense_identity": {"after": "d2"},
                "residual": {"after": "bn1"},
                "widen": {"layer": "d1", "units": 100},
            },
        ),
    }
    per_kind: dict[str, float] = {}
    for model_name, (model, inputs, kinds) in cases.items():
        for kind, kwargs in kinds.items():
            start = time.perf_counter()
            result = grow_model(model, kind=kind, probe_inputs=inputs, **kwargs)
            diff = result["verification"]["max_abs_diff"]
            report[f"max_abs_diff_{kind}_{model_name}"] = diff
            report[f"relative_diff_{kind}_{model_name}"] = result["verification"]["relative_diff"]
            report[f"seconds_{kind}_{model_name}"] = time.perf_counter() - start
            if model_name == "mobilenetv2" and kind in INNER_PROBES:
                probe = INNER_PROBES[kind]
                inner, relative = inner_diff(model, result["model"], probe, inputs)
                report[f"max_abs_diff_{kind}_mobilenetv2_at_{probe}"] = inner
                report[f"relative_diff_{kind}_mobilenetv2_at_{probe}"] = relative
                diff = max(diff, inner)
            per_kind[kind] = max(per_kind.get(kind, 0.0), diff)
    report["conv_identity_mlp"] = "not applicable (MLP has no image feature maps)"
    for kind, diff in per_kind.items():
        report[f"max_abs_diff_{kind}"] = diff
    model, inputs, _ = cases["mobilenetv2"]
    seed = compare_outputs(model, seed_ones_conv(model, "block_3_expand_relu"), inputs)
    grown = seed_ones_conv(model, "block_3_expand_relu")
    probe = "block_3_depthwise"  # the first layer after the insertion point
    before = np.asarray(keras.Model(model.inputs, model.get_layer(probe).output)(inputs))
    after = np.asarray(keras.Model(grown.inputs, grown.get_layer(probe).output)(inputs))
    report["seed_ones_conv_diff"] = float(np.max(np.abs(after - before)))
    report["seed_ones_conv_relative_diff"] = report["seed_ones_conv_diff"] / float(np.max(np.abs(before)))
    report["seed_ones_conv_diff_measured_at"] = probe
    # A random-weight MobileNetV2's pooled output barely depends on its input (BN + ReLU6
    # saturate), which hides even large inner changes at the final output:
    report["seed_ones_conv_final_output_diff"] = seed["max_abs_diff"]
    other = np.random.default_rng(9).standard_normal(inputs.shape).astype("float32")
    report["mobilenetv2_output_input_sensitivity"] = float(
        np.max(np.abs(np.asarray(model(inputs)) - np.asarray(model(other))))
    )
    report["targets_met"] = {f"max_abs_diff_{kind}<=1e-6": diff <= 1e-6 for kind, diff in per_kind.items()}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
