"""Freezing counts only weight-bearing layers and reports newly trainable params."""

from __future__ import annotations

import numpy as np
import pytest

from modelhub.ml.errors import MLError
from modelhub.ml.freeze import freeze_backbone, unfreeze_top


def _params(layers):
    return sum(int(np.prod(w.shape)) for layer in layers for w in layer.trainable_weights)


def test_freeze_backbone(backbone):
    report = freeze_backbone(backbone)
    assert report["trainable_params_before"] > 0
    assert report["trainable_params_after"] == 0
    assert not backbone.trainable_weights


def test_unfreeze_top_skips_weightless_layers(backbone):
    freeze_backbone(backbone)
    # Top of the backbone: pool (no weights), conv2, relu1 (no weights), bn1, conv1.
    report = unfreeze_top(backbone, 2)
    assert report["unfrozen_layers"] == ["conv2", "bn1"]
    assert report["weight_bearing_layers"] == 3
    expected = _params([backbone.get_layer("conv2"), backbone.get_layer("bn1")])
    assert report["newly_trainable_params"] == expected == report["trainable_params"]
    assert not backbone.get_layer("conv1").trainable
    with pytest.raises(MLError, match="0 <= num_layers <= 3"):
        unfreeze_top(backbone, 4)


def test_unfrozen_batchnorm_stays_in_inference_mode(backbone, images):
    """Through modelhub.ml.train.model.full_model the backbone runs with training=False: BN stats do not move."""
    import keras

    from modelhub.ml.train.model import build_head, full_model

    freeze_backbone(backbone)
    unfreeze_top(backbone, 3)
    bn = backbone.get_layer("bn1")
    before = [w.copy() for w in bn.get_weights()[2:]]
    model = full_model(backbone, build_head([6], units=2), None)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    gamma_before = bn.get_weights()[0].copy()
    model.fit(images, np.array([0, 1, 0, 1]), epochs=1, verbose=0)
    for old, new in zip(before, bn.get_weights()[2:], strict=True):
        np.testing.assert_array_equal(old, new)  # moving statistics untouched
    assert not np.array_equal(bn.get_weights()[0], gamma_before)  # but gamma did train
