"""The seed's path with a keras-hub family (issue 22, items 4 and 8): BertTextClassifier task files.

A team fine-tuned one tiny ``BertBackbone`` (built from a config, no preset) into several
``BertTextClassifier`` tasks and saved each with ``task.save()`` and ``preprocessor=None``. As that
team would, through the HTTP API and a real worker: the task files are imported (the backbone is
the task's, each head the task's Dropout and Dense), a new head is trained from a Parquet file of
token-id lists (columns mapped to the backbone's inputs token_ids, segment_ids, padding_mask),
everything is reviewed and released under the alias ``champion``, and the assembly made from that
alias is downloaded. A fresh process that imports only TensorFlow calls ``serving_by_task`` with
the three token arrays and task slugs; each imported task is compared with its own
``task.predict``, the trained one with its stored backbone and head loaded here by Keras.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from heads.models import HeadVersion
from tests.heads.test_real_models import import_files
from tests.heads.test_task_and_variable_length_import import bert_tasks, token_batch
from tests.scenarios.test_seed_text_team import _approve, _ready_dataset, release_assemble_and_download
from tests.training.helpers import finished_job, post_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

WIDTHS = (3, 2, 4, 2)  # four task files: intent0 .. intent3
INPUTS = ("token_ids", "segment_ids", "padding_mask")
COLUMNS = {"token_ids": "ids", "segment_ids": "segments", "padding_mask": "mask"}
RELATIVE_TOLERANCE = 1e-5

# serving_by_task with the backbone's three named inputs and task slugs; prints outputs and what got imported.
FRESH_PROCESS = """
import json, sys
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
arrays = np.load(sys.argv[2])
serve = model.signatures["serving_by_task"]
result = serve(**{name: tf.constant(arrays[name]) for name in arrays.files})
print(json.dumps({
    "outputs": result["outputs"].numpy().tolist(),
    "output_width": result["output_width"].numpy().tolist(),
    "signature_inputs": sorted(serve.structured_input_signature[1]),
    "modules": sorted(m for m in ("django", "modelhub", "heads", "tests", "keras_hub") if m in sys.modules),
}))
"""


def _write_parquet(path, num_rows: int) -> None:
    """Token-id lists per row, one list column per backbone input; the label says whether a row is long."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    batch = token_batch(num_rows, seed=3)
    lengths = batch["padding_mask"].sum(axis=1)
    table = {column: [row.tolist() for row in batch[name]] for name, column in COLUMNS.items()}
    table["intent"] = ["long" if length > 7 else "short" for length in lengths]
    pq.write_table(pa.table(table), path)


def _trained_outputs(head: HeadVersion, inputs: dict, folder) -> np.ndarray:
    """The trained head's outputs recomputed by Keras: its stored backbone, then the head."""
    import keras
    import keras_hub  # noqa: F401 - registers keras_hub>BertBackbone for safe loading

    from artifacts.services import blob_fetch_verified

    def load(blob):
        return keras.saving.load_model(
            blob_fetch_verified(blob=blob, destination=folder / f"{blob.sha256}.keras"), safe_mode=True
        )

    features = load(head.backbone.blob)(inputs, training=False)
    return np.asarray(load(head.blob)(features, training=False), dtype=np.float32)


def test_a_keras_hub_text_classifier_family_end_to_end(api_client_for, celery_worker, tmp_path):
    author = api_client_for("alice")
    reviewer = api_client_for("rita", role="reviewer")
    tasks, paths = bert_tasks(tmp_path, widths=WIDTHS)

    # 1. The task files, imported with the task's backbone as the feature layer (its name: Keras numbers
    # "bert_backbone" when this process made one before).
    imported = import_files(author, paths, feature_layer=tasks[0].backbone.name, timeout=600)
    assert imported["status"] == "succeeded", json.dumps(imported, indent=1)[:4000]
    assert [(entry["task"], entry["output_width"]) for entry in imported["report"]] == [
        (f"intent{index}", width) for index, width in enumerate(WIDTHS)
    ]
    assert all(entry["head_layers"] == ["classifier_dropout", "logits"] for entry in imported["report"])
    backbone_id = imported["backbone"]
    heads = {entry["task"]: entry["head_version"] for entry in imported["report"]}
    for head_id in heads.values():
        _approve(author, reviewer, head_id)

    # 2. A new head from Parquet token-id lists, each column mapped to a backbone input.
    parquet_path = tmp_path / "length.parquet"
    _write_parquet(parquet_path, 120)
    mapping = {"inputs": COLUMNS, "label": "intent", "validation": {"fraction": 0.2}}
    dataset = _ready_dataset(author, parquet_path, columns=json.dumps(mapping))
    assert sorted((item["name"], item["kind"]) for item in dataset["inputs"]) == sorted(
        (name, "token_ids") for name in INPUTS
    ), dataset["inputs"]
    job = finished_job(
        author,
        post_job(author, "train_head", backbone=backbone_id, dataset=dataset["id"], task="length", epochs=2, seed=1)[
            "id"
        ],
        timeout=600,
    )
    assert job["status"] == "succeeded", json.dumps(job, indent=1)[:3000]
    heads["length"] = job["result"]["head_versions"][0]
    _approve(author, reviewer, heads["length"])

    # 3. Release every task under `champion` (the reviewer sets it: four eyes), assemble from the alias.
    release_assemble_and_download(author, reviewer, heads, backbone_id, tmp_path / "served", timeout=900)

    # 4. A fresh TensorFlow-only process serves a batch mixing every task, by slug.
    slugs = sorted(heads)
    inputs = token_batch(3 * len(slugs), seed=7)
    row_tasks = [slugs[i % len(slugs)] for i in range(len(inputs["token_ids"]))]
    np.savez(tmp_path / "batch.npz", **inputs, task=np.array(row_tasks))
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(tmp_path / "served" / "model"), str(tmp_path / "batch.npz")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served["modules"] == [], served["modules"]
    assert served["signature_inputs"] == sorted([*INPUTS, "task"])
    outputs = np.asarray(served["outputs"], dtype=np.float32)

    # 5. Each task against an independent computation on the whole batch (row subsets change rounding).
    expected = {f"intent{index}": task.predict(inputs, verbose=0) for index, task in enumerate(tasks)}
    expected["length"] = _trained_outputs(HeadVersion.objects.get(pk=heads["length"]), inputs, tmp_path)
    for slug in slugs:
        rows = [i for i, task in enumerate(row_tasks) if task == slug]
        want = np.asarray(expected[slug], dtype=np.float32)[rows]
        width = want.shape[1]
        tolerance = RELATIVE_TOLERANCE * max(1.0, float(np.max(np.abs(want))))
        difference = float(np.max(np.abs(outputs[rows, :width] - want)))
        assert difference <= tolerance, (slug, difference)
        assert np.all(outputs[rows, width:] == 0), slug
        assert [served["output_width"][r] for r in rows] == [width] * len(rows)
