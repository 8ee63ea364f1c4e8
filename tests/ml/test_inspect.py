"""Inspection returns plain data; fingerprints tell identical weights apart."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modelhub.ml.errors import LayerNotFoundError
from modelhub.ml.inspect import backbone_up_to, copy_model, inspect_model, weights_fingerprint
from tests.ml.conftest import make_backbone


def test_inspect_model_plain_data(backbone):
    info = inspect_model(backbone)
    json.dumps(info)  # JSON-able
    assert info["inputs"] == [{"name": "image", "shape": [8, 8, 3], "dtype": "float32"}]
    assert info["feature_layer"] == "pool"
    assert info["feature_shape"] == [6]
    expected_total = sum(int(np.prod(w.shape)) for w in backbone.weights)
    assert info["params"]["total"] == expected_total
    # BatchNorm moving mean/var (2 x 4) are the only non-trainable params.
    assert info["params"]["non_trainable"] == 8
    assert info["params"]["trainable"] == expected_total - 8
    by_name = {layer["name"]: layer for layer in info["layers"]}
    assert by_name["conv1"] == {
        "name": "conv1",
        "type": "Conv2D",
        "params": 3 * 3 * 3 * 4 + 4,
        "trainable": True,
        "has_weights": True,
    }
    assert by_name["relu1"]["has_weights"] is False


def test_inspect_named_feature_layer(backbone):
    info = inspect_model(backbone, feature_layer="relu1")
    assert info["feature_layer"] == "relu1" and info["feature_shape"] == [8, 8, 4]
    with pytest.raises(LayerNotFoundError, match="no_such"):
        inspect_model(backbone, feature_layer="no_such")


def test_fingerprint_tracks_weights(tmp_path, backbone):
    fingerprint = weights_fingerprint(backbone)
    assert len(fingerprint) == 64
    path = tmp_path / "b.keras"
    backbone.save(path)
    from modelhub.ml.safe_load import load_keras_model

    assert weights_fingerprint(load_keras_model(path)) == fingerprint
    perturbed = copy_model(backbone)
    weights = perturbed.get_layer("conv2").get_weights()
    weights[1][0] = np.nextafter(weights[1][0], np.float32(1))
    perturbed.get_layer("conv2").set_weights(weights)
    assert weights_fingerprint(perturbed) != fingerprint
    assert weights_fingerprint(make_backbone(seed=5)) != fingerprint


def test_backbone_up_to(backbone, images):
    cut = backbone_up_to(backbone, "relu1")
    assert cut.outputs[0].shape[1:] == (8, 8, 4)
    copied = backbone_up_to(backbone, "relu1", copy=True)
    np.testing.assert_array_equal(np.asarray(cut(images)), np.asarray(copied(images)))
    assert copied.get_layer("conv1").kernel is not backbone.get_layer("conv1").kernel
