"""Packed Dense heads: the format round-trips, refuses damage, and assembles like the Keras heads."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import modelhub.ml.assembly.verify as verify_module
from modelhub.ml.assembly.build import build_assembly
from modelhub.ml.assembly.manifest import AssemblyHead
from modelhub.ml.assembly.verify import verify_assembly
from modelhub.ml.errors import AssemblyVerificationError, InvalidModelFileError
from modelhub.ml.head_weights import (
    STACKABLE_ACTIVATIONS,
    PackedDenseHead,
    dense_chain_of,
    pack,
    unpack,
    unpack_steps,
)
from tests.ml.conftest import image_batch, make_backbone, make_branchy_head, make_dense_head, make_mlp_head


def packed(model) -> PackedDenseHead:
    data = pack(dense_chain_of(model))
    steps, width = unpack_steps(data)
    return PackedDenseHead(steps=steps, input_width=width, load=lambda: unpack(data))


def test_round_trip_keeps_every_weight_and_the_function():
    model = make_mlp_head(5, seed=3)
    chain = unpack(pack(dense_chain_of(model)))
    assert chain.steps == (("dense", 5, True, "relu"), ("dense", 5, True, "linear"))
    ours = [a for pair in zip(chain.kernels, chain.biases, strict=True) for a in pair]
    assert all(a.dtype == np.float32 for a in ours)
    for array, weight in zip(ours, model.get_weights(), strict=True):
        np.testing.assert_array_equal(array, weight)
    features = np.random.default_rng(0).standard_normal((4, 6)).astype("float32")
    np.testing.assert_allclose(chain.apply(features), np.asarray(model(features)), atol=1e-6)


def test_non_chains_have_no_packed_form():
    assert dense_chain_of(make_branchy_head()) is None


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"NOTMAGIC" + data[8:],
        lambda data: data[:-4],
        lambda data: data[:13] + b"!" + data[14:],
        lambda data: data.replace(b'"softmax"', b'"exec!!!"'),
    ],
    ids=["magic", "truncated", "header", "activation"],
)
def test_damaged_files_are_refused(damage):
    data = pack(dense_chain_of(make_dense_head(3)))
    with pytest.raises(InvalidModelFileError, match="Expected"):
        unpack(damage(data))


def test_packed_heads_assemble_like_keras_heads(tmp_path):
    backbone = make_backbone()
    models = [make_dense_head(3, seed=21), make_dense_head(3, seed=22), make_mlp_head(5, seed=23), make_branchy_head()]
    info = {"name": "tiny", "version": 1, "sha256": "0" * 64}
    mixed = [
        AssemblyHead("a", packed(models[0]), 1, "a" * 64),
        AssemblyHead("b", models[1], 1, "b" * 64),  # a Keras head stacked with a packed one
        AssemblyHead("c", packed(models[2]), 1, "c" * 64),
        AssemblyHead("d", models[3], 1, "d" * 64),
    ]
    result = build_assembly(backbone=backbone, heads=mixed, export_dir=tmp_path / "asm", backbone_info=info)
    assert result["verification"]["max_abs_diff"] <= 1e-5
    loaded = tf.saved_model.load(str(tmp_path / "asm"))
    images = image_batch(8, seed=5)
    tasks = np.array([0, 1, 2, 3, 3, 2, 1, 0], np.int32)
    out = loaded.signatures["serving_default"](inputs=tf.constant(images), task_id=tf.constant(tasks))["outputs"]
    features = np.asarray(backbone(images, training=False))
    for row, task in enumerate(tasks):
        expected = np.asarray(models[task](features[row : row + 1]))[0]
        np.testing.assert_allclose(out.numpy()[row, : expected.shape[0]], expected, atol=1e-5)
    # Verification of packed heads is independent: wrong packed weights are caught.
    wrong = [*mixed]
    wrong[2] = AssemblyHead("c", packed(make_mlp_head(5, seed=99)), 1, "c" * 64)
    with pytest.raises(AssemblyVerificationError, match="'c'"):
        verify_assembly(tmp_path / "asm", backbone, [h.model for h in wrong])


def test_many_tasks_are_verified_through_the_head_stage(tmp_path, monkeypatch):
    """Above END_TO_END_MAX_ROWS, every task is still checked once, on the saved head stage."""
    monkeypatch.setattr(verify_module, "END_TO_END_MAX_ROWS", 4)
    backbone = make_backbone()
    models = [make_dense_head(3, seed=40 + i) for i in range(12)]
    heads = [AssemblyHead(f"t{i}", packed(m), 1, f"{i:064x}") for i, m in enumerate(models)]
    info = {"name": "tiny", "version": 1, "sha256": "0" * 64}
    result = build_assembly(backbone=backbone, heads=heads, export_dir=tmp_path / "asm", backbone_info=info)
    verification = result["verification"]
    assert verification["end_to_end_tasks"] == 4 and verification["head_stage_tasks"] == 12
    assert len(verification["heads"]) == 12
    checked_end_to_end = {0, 11}
    middle = next(i for i in range(12) if i not in checked_end_to_end and i not in _spread(heads))
    wrong = [h.model for h in heads]
    wrong[middle] = packed(make_dense_head(3, seed=999))
    with pytest.raises(AssemblyVerificationError, match=f"'t{middle}'.*head_stage"):
        verify_assembly(tmp_path / "asm", backbone, wrong)


def _spread(heads):
    return set(verify_module._spread_tasks([h.model for h in heads], verify_module.END_TO_END_MAX_ROWS))


@pytest.mark.parametrize("activation", sorted(STACKABLE_ACTIVATIONS))
def test_numpy_reference_matches_keras_for_every_stackable_activation(activation):
    model = make_dense_head(4, activation=activation, seed=7)
    features = np.random.default_rng(1).standard_normal((5, 6)).astype("float32") * 3
    np.testing.assert_allclose(dense_chain_of(model).apply(features), np.asarray(model(features)), atol=2e-6)
