"""The assembly's cheap paths stay correct: the plain backbone runs without a tf.cond, empty batches still work.

The plain path guards the backbone against empty batches by padding them to one row
(:func:`modelhub.ml.assembly.backbone_graph.at_least_one_row`) rather than with a ``tf.cond``
that took every backbone variable as an input on every call (issue 23, item 5: B=1 latency).
These tests pin that choice and check it on inputs other than images: strings and several inputs.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from modelhub.ml.assembly.build import build_assembly
from modelhub.ml.assembly.manifest import AssemblyHead, build_manifest
from modelhub.ml.assembly.module import build_module
from modelhub.ml.inspect import weights_fingerprint
from tests.ml.conftest import image_batch, make_backbone, make_dense_head

VOCABULARY = ["good", "bad", "movie", "plot", "great"]


def _text_and_number_backbone() -> keras.Model:
    keras.utils.set_random_seed(7)
    text = keras.Input((), dtype="string", name="text")
    number = keras.Input((2,), name="number")
    tokens = keras.layers.TextVectorization(vocabulary=VOCABULARY, output_sequence_length=4, name="vectorize")(text)
    embedded = keras.layers.GlobalAveragePooling1D(name="pool")(keras.layers.Embedding(8, 4, name="embed")(tokens))
    features = keras.layers.Dense(6, activation="tanh", name="features")(
        keras.layers.Concatenate(name="join")([embedded, number])
    )
    return keras.Model({"text": text, "number": number}, features, name="text_backbone")


def test_plain_features_run_the_backbone_without_a_cond():
    """No If op around the backbone: the guard is a pad of max(0, 1 - rows) rows."""
    backbone = make_backbone()
    heads = [AssemblyHead("a", make_dense_head(3, seed=1), 1, "a" * 64)]
    info = {"name": "tiny", "version": 1, "sha256": weights_fingerprint(backbone)}
    manifest = build_manifest(backbone=backbone, heads=heads, backbone_info=info)
    module, _ = build_module(backbone, heads, manifest)
    graph = module.features.get_concrete_function().graph
    op_types = {op.type for op in graph.get_operations()}
    assert not op_types & {"If", "StatelessIf"}, sorted(op_types)
    assert "Pad" in op_types or "PadV2" in op_types
    # Conv2D + BatchNormalization with zero rows fails on CPU without the guard.
    assert module.features(tf.zeros([0, 8, 8, 3])).shape == (0, 6)
    images = image_batch(3)
    np.testing.assert_allclose(
        module.features(tf.constant(images)).numpy(), backbone(images, training=False), atol=1e-6, rtol=0
    )


def test_string_and_number_inputs_serve_empty_and_full_batches(tmp_path):
    backbone = _text_and_number_backbone()
    head = make_dense_head(3, seed=5)
    info = {"name": "text", "version": 1, "sha256": weights_fingerprint(backbone)}
    probe = {
        "text": np.array(["good movie", "bad plot here"]),
        "number": np.array([[0.5, -1.0], [2.0, 0.1]], "float32"),
    }
    build_assembly(
        backbone=backbone,
        heads=[AssemblyHead("review", head, 1, "b" * 64)],
        export_dir=tmp_path / "asm",
        backbone_info=info,
        probe_inputs=probe,
    )
    serving = tf.saved_model.load(str(tmp_path / "asm")).signatures["serving_default"]

    empty = serving(text=tf.zeros([0], tf.string), number=tf.zeros([0, 2]), task_id=tf.zeros([0], tf.int32))
    assert empty["outputs"].shape == (0, 3) and empty["output_width"].shape == (0,)

    rows = {"text": np.array(["great plot", "unknown words", ""]), "number": np.array([[1, 2], [0, 0], [-1, 3]], "f4")}
    got = serving(text=tf.constant(rows["text"]), number=tf.constant(rows["number"]), task_id=tf.zeros([3], tf.int32))
    expected = np.asarray(head(backbone({k: tf.constant(v) for k, v in rows.items()}, training=False)))
    np.testing.assert_allclose(got["outputs"].numpy(), expected, atol=1e-5, rtol=0)
    one = serving(
        text=tf.constant(rows["text"][:1]), number=tf.constant(rows["number"][:1]), task_id=tf.zeros([1], tf.int32)
    )
    np.testing.assert_allclose(one["outputs"].numpy(), expected[:1], atol=1e-5, rtol=0)
