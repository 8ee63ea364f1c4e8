"""The seed's scenario as its text team runs it (issue 22), through the HTTP API and a real worker.

A team of text models sharing one backbone: TextVectorization -> Embedding -> a Transformer block
-> "pooled". Twenty full models come in one import: flattened ones, nested ones, one with two
outputs, and three that fine-tuned the backbone's top block (``branches: true``). A new task is
trained from a CSV, another is fine-tuned to a branch from a Parquet file; everything is reviewed,
released under the alias ``champion``, assembled from that alias and downloaded. A fresh process
that imports only TensorFlow calls ``serving_by_task`` with raw strings, and every task's rows are
compared with an independent computation: the original Keras model for imported tasks, the
trained head's own Keras models (backbone, branch, head, loaded here) for trained ones.
"""

import contextlib
import csv
import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from backbones.models import BackboneVersion
from heads.models import HeadVersion
from tests.real_models.sequences import WORDS, _sentences
from tests.real_models.weights import fine_tune_top
from tests.registry_helpers import upload, wait_status
from tests.training.helpers import finished_job, post_job

pytestmark = pytest.mark.django_db(transaction=True)

SEQUENCE_LENGTH = 16
TOP_BLOCK = ["ffn_in", "ffn_out", "ffn_norm"]
BRANCH_POINT = "attention_norm"
NUM_FLAT, NUM_NESTED = 10, 6  # then one two-output model, then three tuned in their top block
TUNED = (17, 18, 19)
RELATIVE_TOLERANCE = 1e-5
POSITIVE_WORDS = set(WORDS[:40])

# Calls serving_by_task with raw strings and task slugs; prints outputs and what got imported.
FRESH_PROCESS = """
import json, sys
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
batch = json.loads(open(sys.argv[2]).read())
serve = model.signatures["serving_by_task"]
texts = tf.constant(np.array(batch["text"], dtype=str).reshape(-1, 1))
result = serve(inputs=texts, task=tf.constant(batch["task"]))
print(json.dumps({
    "outputs": result["outputs"].numpy().tolist(),
    "output_width": result["output_width"].numpy().tolist(),
    "modules": sorted(m for m in ("django", "modelhub", "heads", "tests") if m in sys.modules),
}))
"""


def _label(sentence: str) -> str:
    """A rule a head can learn from pooled word embeddings: most words from the first half."""
    words = sentence.rstrip(".").lower().split()
    return "positive" if sum(w in POSITIVE_WORDS for w in words) * 2 >= len(words) else "negative"


def _seed_backbone():
    import keras

    keras.utils.set_random_seed(0)
    L = keras.layers
    vectorizer = L.TextVectorization(max_tokens=300, output_sequence_length=SEQUENCE_LENGTH, name="vectorizer")
    vectorizer.adapt(np.array(_sentences(400, seed=1234)))
    text = keras.Input(shape=(1,), dtype="string", name="text")
    x = L.Embedding(vectorizer.vocabulary_size(), 32, name="word_embedding")(vectorizer(text))
    attention = L.MultiHeadAttention(num_heads=2, key_dim=16, name="attention")(x, x)
    x = L.LayerNormalization(name=BRANCH_POINT)(L.Add(name="attention_residual")([x, attention]))
    ffn = L.Dense(64, activation="gelu", name="ffn_in")(x)
    ffn = L.Dense(32, name="ffn_out")(ffn)
    x = L.LayerNormalization(name="ffn_norm")(L.Add(name="ffn_residual")([x, ffn]))
    pooled = L.GlobalAveragePooling1D(name="pooled")(x)
    return keras.Model(text, pooled, name="text_encoder")


def _save_models(folder) -> tuple[list, dict]:
    """Save the twenty full models; return their paths and {task: (path, output name or None)}."""
    import keras

    folder.mkdir(parents=True, exist_ok=True)
    backbone = _seed_backbone()
    L = keras.layers
    paths, outputs = [], {}
    for index in range(20):
        keras.utils.set_random_seed(100 + index)
        if index < NUM_FLAT or index in TUNED:
            inputs, features = backbone.input, backbone.output
        else:
            inputs = keras.Input(shape=(1,), dtype="string", name="text")
            features = backbone(inputs)
        stem = f"review-{index:02d}"
        if index == NUM_FLAT + NUM_NESTED:
            stem = "alpha"
            heads = {
                "cls": L.Dense(3, activation="softmax", name="cls")(features),
                "reg": L.Dense(1, name="reg")(features),
            }
            model = keras.Model(inputs, heads, name="alpha_model")
            outputs.update({"alpha-cls": ("alpha", "cls"), "alpha-reg": ("alpha", "reg")})
        else:
            hidden = L.Dense(16, activation="relu", name=f"h{index}")(features) if index % 3 == 1 else features
            head = L.Dense(2 + index % 4, activation="softmax" if index % 2 else None, name=f"o{index}")(hidden)
            model = keras.Model(inputs, head, name=f"m{index}")
            outputs[stem] = (stem, None)
        path = folder / f"{stem}.keras"
        model.save(path)
        if index in TUNED:
            changed = fine_tune_top(path, path, layer_names=TOP_BLOCK, seed=index)
            assert all(count > 0 for count in changed.values()), changed
        paths.append(path)
    return paths, outputs


def _write_csv(path, sentences):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows([s, _label(s)] for s in sentences)


def _write_parquet(path, sentences):
    import pyarrow as pa
    import pyarrow.parquet as pq

    split = ["val" if i % 5 == 0 else "train" for i in range(len(sentences))]
    table = pa.table({"review": sentences, "sentiment": [_label(s) for s in sentences], "split": split})
    pq.write_table(table, path)


def _graph(model):
    import tensorflow as tf

    return tf.function(lambda batch: model(batch, training=False))


def _original_outputs(paths_by_stem, outputs, texts) -> dict:
    """Return {task: outputs of the original full model (that output) on texts}."""
    import keras
    import tensorflow as tf

    batch = tf.constant(np.array(texts, dtype=str).reshape(-1, 1))
    expected, cache = {}, {}
    for task, (stem, output) in outputs.items():
        if stem not in cache:
            model = keras.saving.load_model(paths_by_stem[stem], safe_mode=True)
            cache[stem] = _graph(model)(batch)
        result = cache[stem]
        expected[task] = np.asarray(result[output] if output else result, dtype=np.float32)
    return expected


def _trained_outputs(head: HeadVersion, texts, folder) -> np.ndarray:
    """Recompute a trained head's outputs with Keras: stored backbone [-> branch] -> head."""
    import keras
    import tensorflow as tf

    from artifacts.services import blob_fetch_verified

    def load(blob):
        path = blob_fetch_verified(blob=blob, destination=folder / f"{blob.sha256}.keras")
        return keras.saving.load_model(path, safe_mode=True)

    backbone = load(head.backbone.blob)
    head_model = load(head.blob)
    batch = tf.constant(np.array(texts, dtype=str).reshape(-1, 1))
    if head.branch_blob_id is None:
        features = _graph(backbone)(batch)
    else:
        trunk = keras.Model(backbone.input, backbone.get_layer(head.branch["after_layer"]).output)
        features = _graph(load(head.branch_blob))(_graph(trunk)(batch))
    return np.asarray(_graph(head_model)(features), dtype=np.float32)


def _import(client, paths) -> dict:
    with contextlib.ExitStack() as stack:
        handles = [stack.enter_context(open(path, "rb")) for path in paths]
        fields = {"team": "vision", "backbone_name": "reviews", "feature_layer": "pooled", "branches": "true"}
        response = client.post("/api/imports/", {**fields, "files": handles}, format="multipart")
    assert response.status_code == 202, response.json()
    return wait_status(client, f"/api/imports/{response.json()['id']}/", timeout=600)


def _approve(author, reviewer, head_id: int):
    assert author.post(f"/api/heads/{head_id}/submit/").status_code == 200
    assert reviewer.post(f"/api/heads/{head_id}/approve/").status_code == 200


def _ready_dataset(client, path, **fields) -> dict:
    response = upload(client, "/api/datasets/", path, team="vision", name=path.stem, **fields)
    assert response.status_code == 202, response.json()
    dataset = wait_status(client, f"/api/datasets/{response.json()['id']}/", timeout=120)
    assert dataset["status"] == "ready", dataset
    return dataset


def release_assemble_and_download(author, reviewer, heads: dict, backbone_id: int, folder, *, timeout: float):
    """Put every {task: head id} under `champion` (set by the reviewer: four eyes), build one assembly
    from that alias, wait until it is ready and unzip its download into `folder`."""
    for slug, head_id in heads.items():
        body = {"team": "vision", "task": slug, "name": "champion", "head": head_id}
        assert reviewer.post("/api/aliases/", body, format="json").status_code == 201, slug
    response = author.post(
        "/api/assemblies/", {"team": "vision", "backbone": backbone_id, "alias": "champion"}, format="json"
    )
    assert response.status_code == 202, response.json()
    url = f"/api/assemblies/{response.json()['id']}/"
    assembly = wait_status(author, url, pending=("queued", "building", "verifying"), timeout=timeout)
    assert assembly["status"] == "ready", json.dumps(assembly, indent=1)[:4000]
    download = author.get(f"/api/assemblies/{assembly['id']}/download/")
    zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content))).extractall(folder)


def test_the_seed_text_team_end_to_end(api_client_for, celery_worker, tmp_path):
    author = api_client_for("alice")
    reviewer = api_client_for("rita", role="reviewer")
    paths, outputs = _save_models(tmp_path / "models")

    # 1. Twenty full models in one import; the base most files share is the stored backbone.
    imported = _import(author, paths)
    assert imported["status"] == "succeeded", json.dumps(imported, indent=1)[:4000]
    heads = HeadVersion.objects.select_related("task").filter(backbone_id=imported["backbone"])
    by_task = {head.task.slug: head for head in heads}
    assert sorted(by_task) == sorted(outputs)
    branched = {slug for slug, head in by_task.items() if head.branch_blob_id is not None}
    assert branched == {f"review-{i:02d}" for i in TUNED}, branched
    assert {by_task[f"review-{i:02d}"].branch["after_layer"] for i in TUNED} == {BRANCH_POINT}
    assert BackboneVersion.objects.count() == 1
    reference = imported["summary"]["reference"]  # 17 of the 20 files share the untouched base
    assert (reference["file"], reference["files_sharing"]) == ("review-00.keras", 17), reference
    assert "17 of 20 files share this backbone" in reference["reason"], reference
    alpha = {entry["task"]: entry for entry in imported["report"] if entry["filename"] == "alpha.keras"}
    assert {task: entry["output"] for task, entry in alpha.items()} == {"alpha-cls": "cls", "alpha-reg": "reg"}
    for head in by_task.values():
        _approve(author, reviewer, head.pk)
    backbone_id = imported["backbone"]

    # 2. A new task from a CSV of text,label (no column mapping: `label` and one other column).
    csv_path = tmp_path / "spam.csv"
    _write_csv(csv_path, _sentences(240, seed=5))
    csv_dataset = _ready_dataset(author, csv_path)
    assert csv_dataset["labels"] == ["negative", "positive"]
    job = finished_job(
        author,
        post_job(author, "train_head", backbone=backbone_id, dataset=csv_dataset["id"], task="spam", epochs=3, seed=1)[
            "id"
        ],
        timeout=300,
    )
    assert job["status"] == "succeeded", json.dumps(job, indent=1)[:3000]
    spam = job["result"]["head_versions"][0]
    _approve(author, reviewer, spam)

    # 3. A fine-tune of the top block to a branch, from Parquet with a validation column.
    parquet_path = tmp_path / "tone.parquet"
    _write_parquet(parquet_path, _sentences(200, seed=6))
    mapping = {"inputs": {"text": "review"}, "label": "sentiment", "validation": {"column": "split", "value": "val"}}
    parquet_dataset = _ready_dataset(author, parquet_path, columns=json.dumps(mapping))
    assert parquet_dataset["num_validation"] == 40
    job = finished_job(
        author,
        post_job(
            author,
            "fine_tune",
            backbone=backbone_id,
            dataset=parquet_dataset["id"],
            task="tone",
            unfreeze_top=3,
            warmup_epochs=1,
            epochs=1,
            output="branch",
            seed=2,
        )["id"],
        timeout=300,
    )
    assert job["status"] == "succeeded", json.dumps(job, indent=1)[:3000]
    tone = job["result"]["head_versions"][0]
    assert HeadVersion.objects.get(pk=tone).branch_blob_id is not None
    _approve(author, reviewer, tone)

    # 4. Release every task's head under `champion`; 5. one assembly from the alias, downloaded,
    # served with raw strings in a fresh process.
    all_heads = {**{slug: head.pk for slug, head in by_task.items()}, "spam": spam, "tone": tone}
    release_assemble_and_download(author, reviewer, all_heads, backbone_id, tmp_path / "served", timeout=600)

    tasks = sorted(all_heads)
    rows_per_task = 3
    texts = _sentences(rows_per_task * len(tasks), seed=77, unknown=0.1)
    row_tasks = [tasks[i % len(tasks)] for i in range(len(texts))]
    (tmp_path / "batch.json").write_text(json.dumps({"text": texts, "task": row_tasks}))
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(tmp_path / "served" / "model"), str(tmp_path / "batch.json")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served["modules"] == [], served["modules"]
    served_outputs = np.asarray(served["outputs"], dtype=np.float32)

    paths_by_stem = {path.stem: path for path in paths}
    expected = _original_outputs(paths_by_stem, outputs, texts)
    for slug in ("spam", "tone"):
        expected[slug] = _trained_outputs(HeadVersion.objects.get(pk=all_heads[slug]), texts, tmp_path)
    for slug in tasks:
        rows = [i for i, task in enumerate(row_tasks) if task == slug]
        width = expected[slug].shape[1]
        want = expected[slug][rows]
        got = served_outputs[rows, :width]
        tolerance = RELATIVE_TOLERANCE * max(1.0, float(np.max(np.abs(want))))
        assert float(np.max(np.abs(got - want))) <= tolerance, (slug, float(np.max(np.abs(got - want))))
        assert np.all(served_outputs[rows, width:] == 0), slug
        assert [served["output_width"][r] for r in rows] == [width] * len(rows)
