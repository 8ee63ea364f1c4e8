"""keras-hub configs are bounded before Keras builds them (review finding 17).

A keras-hub backbone's config declares sizes, not weights: ``from_config`` allocates every
variable while building, before the stored weights are compared with anything. The config reader
counts what each allow-listed keras-hub object declares (modelhub.ml.untrusted.keras_hub; the
formulas are checked here against keras-hub's own ``count_params()``) and refuses a file above
``max_declared_bytes`` without building it. Every keras-hub task node, wherever it sits in the
config, must come without its preprocessor.
"""

from __future__ import annotations

import json
import os
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from modelhub.ml import safe_load  # noqa: E402
from modelhub.ml.errors import InvalidModelFileError, UnsafeModelError  # noqa: E402
from modelhub.ml.untrusted import Limits, check_config_safe  # noqa: E402
from modelhub.ml.untrusted.keras_hub import declared_bytes, declared_params  # noqa: E402

keras_hub = pytest.importorskip("keras_hub")
import keras  # noqa: E402

from modelhub.ml.keras_hub_tasks import task_as_functional  # noqa: E402
from tests.ml.test_keras_hub_tasks import tiny_task  # noqa: E402


def _node(obj) -> dict:
    node = keras.saving.serialize_keras_object(obj)
    return json.loads(json.dumps(node))  # as config.json holds it


def _built(layer, shape):
    layer.build(shape)
    return layer


@pytest.mark.parametrize(
    "make",
    [
        lambda: keras_hub.models.BertBackbone(
            vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=12
        ),
        lambda: _built(keras_hub.layers.TransformerEncoder(intermediate_dim=16, num_heads=2), (None, 5, 8)),
        lambda: _built(keras_hub.layers.PositionEmbedding(sequence_length=7), (None, 7, 8)),
        lambda: _built(keras_hub.layers.TokenAndPositionEmbedding(10, 6, 4), (None, 6)),
        lambda: _built(keras_hub.layers.ReversibleEmbedding(10, 4, tie_weights=False), (None, 3)),
        lambda: _built(keras_hub.layers.ReversibleEmbedding(10, 4), (None, 3)),
    ],
    ids=["bert-backbone", "encoder", "position", "token-and-position", "reversible-untied", "reversible-tied"],
)
def test_the_declared_parameters_are_keras_hubs_own_count(make):
    obj = make()
    assert declared_params(_node(obj))[0] == obj.count_params() > 0
    assert declared_bytes(_node(obj)) == 4 * obj.count_params()


def test_a_task_declares_its_backbone_and_its_classifier():
    task = tiny_task()
    node = _node(task)
    backbone = node["config"]["backbone"]
    assert declared_params(node)[0] + declared_params(backbone)[0] == task.count_params()


def _forged(tmp_path, name: str = "forged", **backbone_config) -> str:
    """A real tiny task file whose config.json declares a far larger backbone (its weights unchanged)."""
    tiny_task().save(tmp_path / "task.keras")
    with zipfile.ZipFile(tmp_path / "task.keras") as source:
        members = {name: source.read(name) for name in source.namelist()}
    config = json.loads(members["config.json"])
    config["config"]["backbone"]["config"].update(backbone_config)
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / f"{name}.keras", "w") as target:
        for member, data in members.items():
            target.writestr(member, data)
    return str(tmp_path / f"{name}.keras")


def test_a_forged_bert_size_is_refused_before_keras_builds_anything(tmp_path, monkeypatch):
    path = _forged(tmp_path, vocabulary_size=10**9, hidden_dim=4096)

    def never(*args, **kwargs):
        raise AssertionError("Keras was asked to build the forged model")

    monkeypatch.setattr(safe_load, "_keras_load", never)
    monkeypatch.setattr(keras.saving, "load_model", never)
    for load in (lambda: safe_load.load_keras_task(path), lambda: task_as_functional(path, tmp_path / "out.keras")):
        with pytest.raises(
            InvalidModelFileError, match="declare at most 8,589,934,592 bytes.*vocabulary_size=1000000000"
        ):
            load()


def test_the_ceiling_is_the_configured_one_and_a_declared_layer_count_is_bounded(tmp_path):
    path = _forged(tmp_path)  # unchanged sizes: 4 x count_params bytes declared
    assert safe_load.load_keras_task(path).count_params() == tiny_task().count_params()
    with pytest.raises(InvalidModelFileError, match="declare at most 1,000 bytes .*Refused before Keras builds"):
        safe_load.load_keras_task(path, max_declared_bytes=1000)
    deep = _forged(tmp_path, "deep", num_layers=10**6, hidden_dim=0)
    with pytest.raises(InvalidModelFileError, match="at most 20,000 layers .*keras_hub>BertBackbone"):
        safe_load.load_keras_task(deep)


def test_a_task_nested_anywhere_must_come_without_its_preprocessor():
    task = _node(tiny_task())
    task["config"]["preprocessor"] = "bert_base_en"  # a string: no object for the walker to refuse
    wrapper = {"module": "keras", "class_name": "Functional", "config": {"name": "outer", "layers": [task]}}
    with pytest.raises(UnsafeModelError, match="saved without its preprocessor"):
        check_config_safe(wrapper, limits=Limits())
    task["config"]["preprocessor"] = None
    check_config_safe(wrapper, limits=Limits())
