"""keras-hub task files and variable-length inputs through the HTTP API and a real worker (issue 22, items 4 and 5).

- A ``BertTextClassifier`` saved with ``task.save()`` imports (backbone = the task's BertBackbone,
  head = its Dropout and Dense), is reviewed and assembled; the downloaded SavedModel, run in a
  fresh TensorFlow-only process, reproduces ``task.predict`` on the same token ids.
- A task saved with its preprocessor is refused, saying how to save it without one.
- A ``(None, 1)`` audio backbone with strided Conv1D layers imports and assembles (outputs checked
  against the original models); a model no length fits fails naming the layer; ``probe_shape``
  from the request is the one used.
"""

import json
import types

import numpy as np
import pytest

from backbones.models import BackboneVersion
from heads.models import HeadVersion, ModelImport
from tests.heads.test_real_models import approve_assemble_and_serve, import_files

pytestmark = pytest.mark.django_db(transaction=True)


def bert_tasks(folder, widths=(3, 2)):
    """Text classifiers on one tiny BertBackbone (same weights), saved as keras-hub tasks."""
    keras_hub = pytest.importorskip("keras_hub")
    import keras

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=64, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=12,
        name="bert_backbone",
    )
    tasks, paths = [], []
    for index, width in enumerate(widths):
        keras.utils.set_random_seed(10 + index)
        task = keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=width, preprocessor=None)
        path = folder / f"intent{index}.keras"
        task.save(path)
        tasks.append(task)
        paths.append(path)
    return tasks, paths


def token_batch(num_rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 13, num_rows)
    positions = np.arange(12)[None, :]
    mask = (positions < lengths[:, None]).astype("int32")
    return {
        "token_ids": rng.integers(1, 64, (num_rows, 12)).astype("int32") * mask,
        "segment_ids": ((positions >= lengths[:, None] // 2) * mask).astype("int32"),
        "padding_mask": mask,
    }


def test_bert_text_classifier_tasks_import_and_the_assembly_reproduces_task_predict(
    api_client_for, celery_worker, tmp_path
):
    tasks, paths = bert_tasks(tmp_path)
    author = api_client_for("alice")
    reviewer = api_client_for("rita", role="reviewer")

    imported = import_files(author, paths, feature_layer="bert_backbone", timeout=300)

    assert imported["status"] == "succeeded", json.dumps(imported, indent=1)
    assert [(r["task"], r["output_width"]) for r in imported["report"]] == [("intent0", 3), ("intent1", 2)]
    for entry in imported["report"]:
        assert entry["head_layers"] == ["classifier_dropout", "logits"], entry
        rewrite = entry["keras_hub_task"]
        assert rewrite["task_class"] == "keras_hub>BertTextClassifier" and rewrite["feature_output"] == "pooled_output"
        assert rewrite["verification"]["max_abs_diff"] <= 1e-6
    backbone = BackboneVersion.objects.get()
    assert sorted(spec["name"] for spec in backbone.spec["inputs"]) == ["padding_mask", "segment_ids", "token_ids"]
    family = types.SimpleNamespace(
        id="bert_tasks", tasks=["intent0", "intent1"], output_widths=[3, 2], sample_inputs=token_batch
    )
    approve_assemble_and_serve(
        author,
        reviewer,
        family,
        imported,
        lambda index, inputs: tasks[index].predict(inputs, verbose=0),
        tmp_path,
        timeout=300,
    )


def test_a_task_saved_with_its_preprocessor_is_refused_saying_how_to_save_it(api_client_for, celery_worker, tmp_path):
    keras_hub = pytest.importorskip("keras_hub")
    import keras

    keras.utils.set_random_seed(0)
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"])
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=6, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=12
    )
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer=tokenizer, sequence_length=12)
    keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=2, preprocessor=preprocessor).save(
        tmp_path / "tokenized.keras"
    )

    body = import_files(
        api_client_for("alice"), [tmp_path / "tokenized.keras"], feature_layer="bert_backbone", timeout=120
    )

    assert body["status"] == "failed", json.dumps(body, indent=1)
    error = body["report"][0]["error"]
    assert "task.preprocessor = None" in error and "token_ids, segment_ids, padding_mask" in error, error
    assert HeadVersion.objects.count() == 0 and BackboneVersion.objects.count() == 0


def audio_models(folder, *, impossible: bool = False):
    """Two full models on a (None, 1) audio backbone with strided Conv1D layers (heads of widths 3 and 2)."""
    import keras

    L = keras.layers
    keras.utils.set_random_seed(0)
    samples = keras.Input((None, 1), name="audio")
    x = L.Conv1D(8, 9, strides=4, activation="relu", name="conv_1")(samples)
    x = L.Conv1D(8, 9, strides=4, activation="relu", name="conv_2")(x)
    x = L.MaxPooling1D(4, name="pool")(x)
    if impossible:  # lengths n' and n' - 2 are concatenated: no input length fits
        x = L.Concatenate(name="join")([x, L.Conv1D(8, 3, name="narrow")(x)])
    features = L.GlobalAveragePooling1D(name="features")(x)
    models, paths = [], []
    for index, width in enumerate((3, 2)):
        keras.utils.set_random_seed(20 + index)
        model = keras.Model(samples, L.Dense(width, name=f"out{index}")(features), name=f"sound{index}")
        model.save(folder / f"sound{index}.keras")
        models.append(model)
        paths.append(folder / f"sound{index}.keras")
    return models, paths


def test_a_variable_length_audio_backbone_imports_and_the_assembly_reproduces_the_models(
    api_client_for, celery_worker, tmp_path
):
    models, paths = audio_models(tmp_path)
    author = api_client_for("alice")
    reviewer = api_client_for("rita", role="reviewer")

    imported = import_files(author, paths, feature_layer="features", timeout=300)

    assert imported["status"] == "succeeded", json.dumps(imported, indent=1)
    assert imported["probe_shape"] == {}
    family = types.SimpleNamespace(
        id="audio",
        tasks=["sound0", "sound1"],
        output_widths=[3, 2],
        sample_inputs=lambda rows, seed: np.random.default_rng(seed).standard_normal((rows, 400, 1)).astype("float32"),
    )
    approve_assemble_and_serve(
        author,
        reviewer,
        family,
        imported,
        lambda index, inputs: np.asarray(models[index](inputs, training=False)),
        tmp_path,
        timeout=300,
    )


def test_no_length_fits_the_import_fails_naming_the_layer(api_client_for, celery_worker, tmp_path):
    _, paths = audio_models(tmp_path, impossible=True)

    body = import_files(api_client_for("alice"), paths, feature_layer="features", timeout=180)

    assert body["status"] == "failed", json.dumps(body, indent=1)
    errors = " ".join([body["error"], *(entry.get("error") or "" for entry in body["report"])])
    assert "layer 'join' (Concatenate)" in errors and "probe_shape" in errors, json.dumps(body, indent=1)
    assert "crashed" not in errors and "Traceback" not in errors


def test_probe_shape_from_the_request_is_the_one_used(api_client_for, celery_worker, tmp_path):
    _, paths = audio_models(tmp_path)
    client = api_client_for("alice")

    too_short = import_files(client, paths, feature_layer="features", timeout=180, probe_shape='{"audio": [40, 1]}')
    assert too_short["status"] == "failed", json.dumps(too_short, indent=1)
    assert too_short["probe_shape"] == {"audio": [40, 1]}
    # By hand: 40 samples -> conv_1 gives 8 rows, fewer than conv_2's kernel of 9.
    errors = " ".join([too_short["error"], *(entry.get("error") or "" for entry in too_short["report"])])
    assert "probe_shape" in errors and "layer 'conv_2' (Conv1D)" in errors, json.dumps(too_short, indent=1)

    fits = import_files(client, paths, feature_layer="features", timeout=180, probe_shape='{"audio": [300, 1]}')
    assert fits["status"] == "succeeded", json.dumps(fits, indent=1)
    assert ModelImport.objects.get(pk=fits["id"]).probe_shape == {"audio": [300, 1]}

    with open(paths[0], "rb") as handle:
        fields = {"team": "vision", "backbone_name": "shared", "feature_layer": "features", "files": [handle]}
        response = client.post("/api/imports/", {**fields, "probe_shape": '{"audio": [0]}'}, format="multipart")
    assert response.status_code == 400, response.json()
    assert "probe_shape" in json.dumps(response.json()), response.json()
