"""keras-hub task models (issue 22, item 4): a BertTextClassifier read safely and rewritten as a full model.

The rewritten file must reproduce ``task.predict`` (the task as keras-hub built it, in this
process) on the same token ids; a task saved with its preprocessor is refused with how to save
it without one; nothing outside the allow-list is loaded.
"""

from __future__ import annotations

import json
import os
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from modelhub.ml.errors import InvalidModelFileError, UnsafeModelError  # noqa: E402
from modelhub.ml.keras_file.archive import KerasArchive  # noqa: E402
from modelhub.ml.safe_load import load_keras_model  # noqa: E402

keras_hub = pytest.importorskip("keras_hub")
import keras  # noqa: E402

from modelhub.ml.keras_hub_tasks import keras_hub_task_file, task_as_functional  # noqa: E402


def tiny_task(*, num_classes: int = 3, seed: int = 0, preprocessor=None):
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=64, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=12,
        name="bert_backbone",
    )
    return keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=num_classes, preprocessor=preprocessor)


def token_batch(num_rows: int = 5, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 13, num_rows)
    positions = np.arange(12)[None, :]
    mask = (positions < lengths[:, None]).astype("int32")
    return {
        "token_ids": rng.integers(1, 64, (num_rows, 12)).astype("int32") * mask,
        "segment_ids": ((positions >= lengths[:, None] // 2) * mask).astype("int32"),
        "padding_mask": mask,
    }


@pytest.fixture(scope="module")
def saved_task(tmp_path_factory):
    folder = tmp_path_factory.mktemp("task")
    task = tiny_task()
    task.save(folder / "classifier.keras")
    return task, folder / "classifier.keras"


def test_a_bert_text_classifier_becomes_a_functional_model_that_reproduces_task_predict(saved_task, tmp_path):
    task, path = saved_task
    assert keras_hub_task_file(path) == "keras_hub>BertTextClassifier"

    rewrite = task_as_functional(path, tmp_path / "full.keras")

    assert rewrite.task_class == "keras_hub>BertTextClassifier"
    assert rewrite.backbone == "bert_backbone" and rewrite.feature_output == "pooled_output"
    assert rewrite.head_layers == ["classifier_dropout", "logits"]
    assert rewrite.inputs == ["padding_mask", "segment_ids", "token_ids"]
    config = json.loads(zipfile.ZipFile(tmp_path / "full.keras").read("config.json"))
    assert config["class_name"] == "Functional"
    classes = [layer["class_name"] for layer in config["config"]["layers"] if layer["class_name"] != "InputLayer"]
    assert classes == ["BertBackbone", "Dropout", "Dense"]
    with KerasArchive(tmp_path / "full.keras") as archive:
        archive.check_layout()
        assert archive.graph.resolve("bert_backbone") == (3, 0)  # the backbone's first output: pooled_output
    batch = token_batch()
    expected = task.predict(batch, verbose=0)
    got = np.asarray(load_keras_model(tmp_path / "full.keras")(batch, training=False))
    assert expected.shape == (5, 3)
    assert float(np.max(np.abs(got - expected))) <= 1e-6


def test_a_task_saved_with_its_preprocessor_is_refused_with_how_to_save_it(tmp_path):
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"])
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer=tokenizer, sequence_length=12)
    tiny_task(preprocessor=preprocessor).save(tmp_path / "with_preprocessor.keras")

    with pytest.raises(UnsafeModelError) as caught:
        keras_hub_task_file(tmp_path / "with_preprocessor.keras")
    message = str(caught.value)
    assert "BertTextClassifierPreprocessor" in message
    assert "task.preprocessor = None" in message and "preprocessor=None" in message
    assert "token_ids, segment_ids, padding_mask" in message
    with pytest.raises(UnsafeModelError, match="task.preprocessor = None"):
        load_keras_model(tmp_path / "with_preprocessor.keras")


def test_a_task_class_outside_the_allow_list_is_refused(tmp_path):
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.DistilBertBackbone(
        vocabulary_size=64, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=12,
        name="bert_backbone",
    )
    task = keras_hub.models.DistilBertTextClassifier(backbone=backbone, num_classes=2, preprocessor=None)
    task.save(tmp_path / "distil.keras")
    with pytest.raises(UnsafeModelError, match="keras_hub>Distil"):
        keras_hub_task_file(tmp_path / "distil.keras")
    with pytest.raises(UnsafeModelError):
        task_as_functional(tmp_path / "distil.keras", tmp_path / "out.keras")


def test_a_plain_model_is_not_a_task_and_is_not_rewritten(tmp_path):
    inputs = keras.Input((4,), name="x")
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(tmp_path / "plain.keras")
    assert keras_hub_task_file(tmp_path / "plain.keras") is None
    with pytest.raises(InvalidModelFileError, match="Expected a keras-hub task"):
        task_as_functional(tmp_path / "plain.keras", tmp_path / "out.keras")
