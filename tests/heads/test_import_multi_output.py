"""Imports of full models with several outputs, through the HTTP API and a real worker.

A model with two outputs (a classifier and a regressor on one shared Dense) imports as two heads,
each its own task, linked to each other and to the file. Mixed with a single-output file in one
import, the heads are reviewed and assembled, and the downloaded SavedModel, run in a fresh
process that imports only TensorFlow, reproduces each output of the ORIGINAL model on its rows.
"""

import contextlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from heads.models import HeadVersion, ModelImport
from tests import model_factory as mf
from tests.heads.test_real_models import approve_assemble_and_serve
from tests.registry_helpers import wait_status

pytestmark = pytest.mark.django_db(transaction=True)


def make_two_output_model(backbone, *, as_dict: bool = True, seed: int = 7):
    """The backbone's layers, a Dense both outputs share, then {"cls": softmax(3), "reg": linear(1)}."""
    import keras

    keras.utils.set_random_seed(seed)
    shared = keras.layers.Dense(5, activation="relu", name="shared")(backbone.output)
    cls = keras.layers.Dense(3, activation="softmax", name="cls_out")(shared)
    reg = keras.layers.Dense(1, name="reg_out")(shared)
    return keras.Model(backbone.input, {"cls": cls, "reg": reg} if as_dict else [cls, reg], name="alpha")


@dataclass
class OutputFamily:
    """Tasks served by one assembly, each reproducing one output of an original model (for the serve check)."""

    tasks: list[str]
    output_widths: list[int]
    outputs: list[tuple[Any, str | int | None]]  # (original model, output key or None for a single output)
    id: str = "multi_output"

    def sample_inputs(self, num_rows: int, seed: int = 0):
        return np.random.default_rng(seed).standard_normal((num_rows, *mf.INPUT_SHAPE)).astype("float32")

    def predict(self, index: int, inputs) -> np.ndarray:
        model, key = self.outputs[index]
        result = model(inputs, training=False)
        return np.asarray(result if key is None else result[key], dtype=np.float32)


@pytest.fixture(scope="module")
def multi_files(tmp_path_factory):
    backbone = mf.make_backbone(seed=0)
    folder = tmp_path_factory.mktemp("multi")
    alpha = make_two_output_model(backbone)
    topic = mf.make_full_model(backbone, "mlp", 4, seed=2, name="t")
    return {
        "alpha": (alpha, mf.save(alpha, folder / "alpha.keras")),
        "topic": (topic, mf.save(topic, folder / "topic.keras")),
    }


def post_import(client, paths, **fields):
    with contextlib.ExitStack() as stack:
        handles = [stack.enter_context(open(path, "rb")) for path in paths]
        data = {"team": "vision", "backbone_name": "shared", "feature_layer": "features", "files": handles, **fields}
        return client.post("/api/imports/", data, format="multipart")


def settled_import(client, paths, **fields) -> dict:
    response = post_import(client, paths, **fields)
    assert response.status_code == 202, response.json()
    return wait_status(client, f"/api/imports/{response.json()['id']}/", timeout=180)


def test_two_outputs_import_as_two_linked_heads_and_serve_output_by_output(
    multi_files, api_client_for, celery_worker, tmp_path
):
    author = api_client_for("alice")
    reviewer = api_client_for("rita", role="reviewer")
    (alpha, alpha_path), (topic, topic_path) = multi_files["alpha"], multi_files["topic"]
    tasks = json.dumps({"alpha.keras": {"cls": "sentiment"}})
    imported = settled_import(author, [alpha_path, topic_path], tasks=tasks)
    assert imported["status"] == "succeeded", json.dumps(imported, indent=1)
    report = imported["report"]
    assert [(r["filename"], r.get("output"), r["task"], r["output_width"]) for r in report] == [
        ("alpha.keras", "cls", "sentiment", 3),
        ("alpha.keras", "reg", "alpha-reg", 1),
        ("topic.keras", None, "topic", 4),
    ]
    # The Dense both outputs share after the feature layer is copied into each head.
    assert report[0]["head_layers"] == ["shared", "cls_out"] and report[1]["head_layers"] == ["shared", "reg_out"]
    assert report[0]["file_outputs"] == ["cls", "reg"] and "file_outputs" not in report[2]
    outputs = imported["summary"]["verification"]["outputs"]
    assert set(outputs) == {"cls", "reg"} and all(v["max_rel_diff"] <= 1e-5 for v in outputs.values())

    sentiment = author.get(f"/api/heads/{report[0]['head_version']}/").json()
    score = author.get(f"/api/heads/{report[1]['head_version']}/").json()
    plain = author.get(f"/api/heads/{report[2]['head_version']}/").json()
    sha256 = ModelImport.objects.get().files.get(filename="alpha.keras").blob.sha256
    assert sentiment["from_file"] == {
        "import": imported["id"],
        "filename": "alpha.keras",
        "sha256": sha256,
        "outputs": ["cls", "reg"],
        "output": "cls",
    }
    assert sentiment["siblings"] == [{"head_version": score["id"], "task": "alpha-reg", "output": "reg"}]
    assert score["siblings"] == [{"head_version": sentiment["id"], "task": "sentiment", "output": "cls"}]
    assert plain["from_file"] is None and plain["siblings"] == []
    assert HeadVersion.objects.get(pk=sentiment["id"]).source_blob.sha256 == sha256

    family = OutputFamily(
        tasks=["sentiment", "alpha-reg", "topic"],
        output_widths=[3, 1, 4],
        outputs=[(alpha, "cls"), (alpha, "reg"), (topic, None)],
    )
    approve_assemble_and_serve(author, reviewer, family, imported, family.predict, tmp_path, timeout=300)


def test_default_tasks_of_list_outputs_and_mapping_errors(api_client_for, celery_worker, tmp_path):
    backbone = mf.make_backbone(seed=0)
    listed = mf.save(make_two_output_model(backbone, as_dict=False), tmp_path / "Beta Model.keras")
    single = mf.save(mf.make_full_model(backbone, "dense", 2, seed=3, name="s"), tmp_path / "gamma.keras")
    client = api_client_for("ana")

    # List outputs are named by their output layers; the file's task is the prefix.
    imported = settled_import(client, [listed, single])
    assert imported["status"] == "succeeded", json.dumps(imported, indent=1)
    assert [r["task"] for r in imported["report"]] == ["beta-model-cls_out", "beta-model-reg_out", "gamma"]

    # A mapping naming an output the file does not have fails the import, naming the outputs it has.
    wrong = settled_import(client, [listed, single], tasks=json.dumps({"Beta Model.keras": {"cls": "x"}}))
    assert wrong["status"] == "failed"
    error = next(r["error"] for r in wrong["report"] if r.get("error"))
    assert "['cls_out', 'reg_out']" in error and "['cls']" in error, error

    # Two heads with one task: both files are named.
    clash = settled_import(client, [listed, single], tasks=json.dumps({"Beta Model.keras": {"cls_out": "gamma"}}))
    assert clash["status"] == "failed" and "2 of 2 files failed" in clash["error"]
    for entry in clash["report"]:
        assert "'gamma' is the task of 'Beta Model.keras' (output 'cls_out') and 'gamma.keras'" in entry["error"]
    assert HeadVersion.objects.count() == 3  # only the first import registered anything


def test_tasks_mapping_request_errors(api_client_for, multi_files):
    client = api_client_for("ana")
    paths = [multi_files["alpha"][1], multi_files["topic"][1]]
    unknown = post_import(client, paths, tasks=json.dumps({"nope.keras": "x"}))
    assert unknown.status_code == 400
    assert "nope.keras" in unknown.json()["error"]["message"] and "alpha.keras" in unknown.json()["error"]["message"]
    bad_slug = post_import(client, paths, tasks=json.dumps({"alpha.keras": {"cls": "Not A Slug"}}))
    assert bad_slug.status_code == 400 and "Invalid task slug" in bad_slug.json()["error"]["message"]
    bad_shape = post_import(client, paths, tasks=json.dumps({"alpha.keras": 3}))
    assert bad_shape.status_code == 400 and "alpha.keras" in bad_shape.json()["error"]["message"]
    assert ModelImport.objects.count() == 0
