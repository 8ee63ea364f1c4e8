"""Probe rows for variable-length inputs (issue 22, item 5): a length every layer accepts, or a named refusal.

The expected lengths are worked out by hand from the layers' arithmetic (valid convolution:
out = floor((in - kernel) / stride) + 1), not read back from the code under test.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from modelhub.ml.errors import ProbeShapeError  # noqa: E402
from modelhub.ml.grow import grow_model  # noqa: E402
from modelhub.ml.probes import (  # noqa: E402
    accepted_length,
    probe_inputs_for,
    probe_row_shapes,
    probe_shape_override,
)

L = keras.layers


def audio_backbone(name: str = "audio_backbone") -> keras.Model:
    """(None, 1) samples -> Conv1D(k9, s4) -> Conv1D(k9, s4) -> MaxPooling1D(4) -> pooled features."""
    keras.utils.set_random_seed(0)
    samples = keras.Input((None, 1), name="audio")
    x = L.Conv1D(8, 9, strides=4, activation="relu", name="conv_1")(samples)
    x = L.Conv1D(8, 9, strides=4, activation="relu", name="conv_2")(x)
    x = L.MaxPooling1D(4, name="pool")(x)
    features = L.GlobalAveragePooling1D(name="features")(x)
    return keras.Model(samples, features, name=name)


def shortest_accepted(length_ok) -> int:
    return next(n for n in range(1, 100_000) if length_ok(n))


def audio_length_ok(n: int) -> bool:
    after_1 = (n - 9) // 4 + 1 if n >= 9 else 0
    after_2 = (after_1 - 9) // 4 + 1 if after_1 >= 9 else 0
    return after_2 // 4 >= 1


def test_a_strided_audio_backbone_gets_the_shortest_power_of_two_its_layers_accept():
    model = audio_backbone()
    # By hand: pool needs 4 rows, so conv_2 needs 9 + 3 * 4 = 21 and conv_1 needs 9 + 20 * 4 = 89 samples;
    # the first power of two at or above is 128 (64 gives conv_1 14 rows, conv_2 2, pool 0).
    assert shortest_accepted(audio_length_ok) == 89
    assert not audio_length_ok(64) and audio_length_ok(128)
    assert probe_row_shapes(model) == {"audio": [128, 1]}
    probe = probe_inputs_for(model, num_rows=3)
    assert probe.shape == (3, 128, 1)
    assert np.asarray(model(probe)).shape == (3, 8)


def test_a_model_that_takes_any_length_keeps_length_one():
    tokens = keras.Input((None,), dtype="int32", name="token_ids")
    pooled = L.GlobalAveragePooling1D()(L.Embedding(20, 4)(tokens))
    model = keras.Model(tokens, pooled)
    assert probe_row_shapes(model) == {"token_ids": [1]}
    assert probe_inputs_for(model).max() < 20


def test_a_token_model_with_a_convolution_gets_a_length_its_kernel_accepts():
    tokens = keras.Input((None,), dtype="int32", name="token_ids")
    x = L.Conv1D(4, 5, name="ngram")(L.Embedding(20, 4)(tokens))
    model = keras.Model(tokens, L.GlobalMaxPooling1D()(x))
    assert probe_row_shapes(model) == {"token_ids": [8]}  # 5 is the shortest; 8 the first power of two above


def test_an_exact_length_is_found_beyond_the_powers_of_two():
    samples = keras.Input((None, 1), name="audio")
    x = L.Conv1D(4, 3, name="conv")(samples)
    model = keras.Model(samples, L.Flatten()(L.Reshape((5, 4), name="fixed")(x)))
    assert accepted_length(model, {"audio": [None, 1]}) == 7  # 7 - 3 + 1 = 5 rows for the Reshape


def impossible_model() -> keras.Model:
    """Concatenates x with a valid Conv1D of x: lengths n and n - 2 never agree."""
    samples = keras.Input((None, 1), name="audio")
    narrowed = L.Conv1D(1, 3, name="narrow")(samples)
    joined = L.Concatenate(axis=-1, name="join")([samples, narrowed])
    return keras.Model(samples, L.GlobalAveragePooling1D()(joined), name="impossible")


def test_no_length_works_error_names_the_layer_and_probe_shape():
    with pytest.raises(ProbeShapeError) as caught:
        probe_inputs_for(impossible_model())
    message = str(caught.value)
    assert "layer 'join' (Concatenate)" in message, message
    assert "probe_shape" in message and "['audio']" in message, message
    assert "Traceback" not in message


def test_nested_model_failure_names_the_inner_layer():
    outer = keras.Input((None, 1), name="wave")
    full = keras.Model(outer, L.Dense(2, name="head")(audio_backbone()(outer)), name="full")
    assert probe_row_shapes(full) == {"wave": [128, 1]}
    with pytest.raises(ProbeShapeError, match=r"layer 'audio_backbone/conv_2' \(Conv1D\)"):
        probe_row_shapes(full, probe_shape={"wave": [20, 1]})  # conv_1 -> 3 rows, too few for conv_2's 9


def test_probe_shape_from_the_caller_wins_and_is_checked_against_the_declared_dims():
    model = audio_backbone()
    assert probe_row_shapes(model, probe_shape={"audio": [1000, 1]}) == {"audio": [1000, 1]}
    with probe_shape_override({"audio": [777, 1]}):
        assert probe_inputs_for(model).shape == (4, 777, 1)
        assert probe_row_shapes(model, probe_shape={"audio": [300, 1]}) == {"audio": [300, 1]}
    assert probe_row_shapes(model) == {"audio": [128, 1]}  # the override ends with its block
    for bad in ([1000], [1000, 2], [0, 1], "1000"):
        with pytest.raises(ProbeShapeError, match=r"probe_shape\['audio'\]"):
            probe_row_shapes(model, probe_shape={"audio": bad})


def test_growth_of_a_variable_length_backbone_is_verified_on_accepted_rows():
    model = audio_backbone()
    result = grow_model(model, kind="dense_identity", after="features")
    assert result["verification"]["relative_diff"] <= 1e-5
