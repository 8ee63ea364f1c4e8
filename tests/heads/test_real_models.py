"""Conformance matrix: real architectures go the whole way, import -> review -> assembly -> serving.

Each family of tests/real_models.py (K full models sharing one backbone, built from
architectures the team did not design) is imported through the HTTP API with a real worker, its
heads are submitted and approved, the assembly is built and downloaded, and its SavedModel is
run in a fresh process that imports only TensorFlow and NumPy, on a batch mixing every task.
Each task's rows must match the ORIGINAL full model to 1e-5 relative to the output's scale.

SavedModel contract: a single-input backbone is called `serving_default(inputs=..., task_id=...)`;
a backbone with several inputs by each input's name plus `task_id`. It returns `outputs`
(float32, [batch, max width], zero-padded) and `output_width`.

The large families (ResNet50V2, ConvNeXtTiny, EfficientNetB0, keras-hub BERT) and the single-shape
MobileNetV2 cases are marked slow: `make test PYTEST_ARGS="-m slow tests/heads/test_real_models.py"`.
"""

import contextlib
import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from backbones.models import BackboneVersion
from heads.models import HeadVersion
from tests import real_models
from tests.registry_helpers import wait_status

pytestmark = pytest.mark.django_db(transaction=True)

# Large models (about 17 to 112 MB a file), or an extra install (keras-hub).
SLOW_FAMILIES = {"efficientnetb0", "resnet50v2", "convnexttiny", "keras_hub_bert"}
NUM_ROWS_PER_TASK = 3
RELATIVE_TOLERANCE = 1e-5  # of max(1, max |reference output|), per task
# (family, whether the import names the feature layer); False: the import must choose it.
# The default run keeps one MobileNetV2 case: the mixed family nests the base in some models
# and flattens it in others, so it covers both shapes; each shape alone is in the slow run.
END_TO_END_CASES = [
    ("mobilenetv2_mixed", True),
    ("transformer_tokens", True),
    ("text_vectorization", True),
    ("two_inputs", True),
    ("two_inputs", False),
    pytest.param("mobilenetv2_nested", True, marks=pytest.mark.slow),
    pytest.param("mobilenetv2_flat", True, marks=pytest.mark.slow),
    pytest.param("mobilenetv2_flat", False, marks=pytest.mark.slow),
    *[pytest.param(family_id, True, marks=pytest.mark.slow) for family_id in sorted(SLOW_FAMILIES)],
]

# Runs the SavedModel's serving_default on arrays from an .npz (one key per signature input,
# plus task_id) and prints the outputs as JSON, with whatever of our code got imported.
FRESH_PROCESS = """
import json, sys
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
arrays = np.load(sys.argv[2])
serve = model.signatures["serving_default"]
result = serve(**{name: tf.constant(arrays[name]) for name in arrays.files})
print(json.dumps({
    "outputs": result["outputs"].numpy().tolist(),
    "dtype": result["outputs"].dtype.name,
    "output_width": result["output_width"].numpy().tolist(),
    "signature_inputs": sorted(serve.structured_input_signature[1]),
    "modules": sorted(m for m in ("django", "modelhub", "heads", "tests", "keras_hub") if m in sys.modules),
}))
"""


@pytest.fixture(scope="session")
def family_files(tmp_path_factory):
    """Return `get(family_id) -> (Family, [paths])`; each family is built and saved once per session."""
    cache = {}

    def get(family_id: str):
        if family_id not in cache:
            if family_id == "keras_hub_bert":
                pytest.importorskip("keras_hub", reason="keras-hub is not installed")
            family = real_models.build_family(family_id)
            cache[family_id] = (family, family.save(tmp_path_factory.mktemp(family_id)))
        return cache[family_id]

    return get


def case_id(value):
    return {True: "named-layer", False: "chosen-layer"}.get(value, value) if isinstance(value, bool) else value


def import_files(client, paths, *, feature_layer: str | None, timeout: float, **extra) -> dict:
    """POST the files as one import (naming `feature_layer` unless None); return the settled import.

    `extra` fields (e.g. branches="true") go into the form as they are.
    """
    fields = {"team": "vision", "backbone_name": "shared", **extra}
    if feature_layer is not None:
        fields["feature_layer"] = feature_layer
    with contextlib.ExitStack() as stack:
        handles = [stack.enter_context(open(path, "rb")) for path in paths]
        response = client.post("/api/imports/", {**fields, "files": handles}, format="multipart")
    assert response.status_code == 202, response.json()
    return wait_status(client, f"/api/imports/{response.json()['id']}/", timeout=timeout)


def run_fresh_process(model_dir, batch_path) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(model_dir), str(batch_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=batch_path.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("family_id", "name_feature_layer"), END_TO_END_CASES, ids=case_id)
def test_real_family_end_to_end(family_id, name_feature_layer, family_files, api_client_for, celery_worker, tmp_path):
    family, paths = family_files(family_id)
    timeout = 900 if family_id in SLOW_FAMILIES else 300
    author = api_client_for("alice")
    reviewer = api_client_for("rita", role="reviewer")

    feature_layer = family.feature_layer if name_feature_layer else None
    imported = import_files(author, paths, feature_layer=feature_layer, timeout=timeout)
    assert imported["status"] == "succeeded", json.dumps(imported, indent=1)
    if not name_feature_layer:
        assert imported["feature_layer"] == family.auto_feature_layer, json.dumps(imported, indent=1)
    assert [(r["task"], r["output_width"], r["ok"]) for r in imported["report"]] == [
        (task, width, True) for task, width in zip(family.tasks, family.output_widths, strict=True)
    ]
    assert BackboneVersion.objects.count() == 1
    approve_assemble_and_serve(author, reviewer, family, imported, family.predict, tmp_path, timeout=timeout)


def approve_assemble_and_serve(author, reviewer, family, imported, predict, tmp_path, *, timeout: float) -> dict:
    """Approve every imported head, assemble them all, run the download in a fresh process, compare.

    Each task's rows of a batch mixing every task must match `predict(index, inputs)` (the
    original full model) to RELATIVE_TOLERANCE. Returns the manifest.
    """
    for entry in imported["report"]:
        assert author.post(f"/api/heads/{entry['head_version']}/submit/").status_code == 200
        assert reviewer.post(f"/api/heads/{entry['head_version']}/approve/").status_code == 200

    response = author.post("/api/assemblies/", {"team": "vision", "backbone": imported["backbone"]}, format="json")
    assert response.status_code == 202, response.json()
    assembly = wait_status(
        author,
        f"/api/assemblies/{response.json()['id']}/",
        pending=("queued", "building", "verifying"),
        timeout=timeout,
    )
    assert assembly["status"] == "ready", json.dumps(assembly, indent=1)
    assert sorted((t["task"], t["output_width"]) for t in assembly["tasks"]) == sorted(
        zip(family.tasks, family.output_widths, strict=True)
    )
    download = author.get(f"/api/assemblies/{assembly['id']}/download/")
    assert download.status_code == 200
    zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content))).extractall(tmp_path)
    model_dir = tmp_path / "model"
    manifest = json.loads((model_dir / "assets" / "manifest.json").read_text())
    task_ids = {entry["task"]: entry["task_id"] for entry in manifest["heads"]}
    assert sorted(task_ids) == sorted(family.tasks)

    # A batch mixing every task: row i belongs to task i % K.
    num_tasks = len(family.tasks)
    num_rows = NUM_ROWS_PER_TASK * num_tasks
    inputs = family.sample_inputs(num_rows, 7)
    row_task = np.arange(num_rows) % num_tasks
    arrays = real_models.signature_arrays(inputs)
    arrays["task_id"] = np.array([task_ids[family.tasks[k]] for k in row_task], dtype=np.int32)
    np.savez(tmp_path / "batch.npz", **arrays)
    served = run_fresh_process(model_dir, tmp_path / "batch.npz")

    assert served["modules"] == [], served["modules"]
    assert served["signature_inputs"] == sorted(arrays), served["signature_inputs"]
    outputs = np.asarray(served["outputs"], dtype=np.float32)
    assert served["dtype"] == "float32" and outputs.shape == (num_rows, max(family.output_widths))
    for index, (task, width) in enumerate(zip(family.tasks, family.output_widths, strict=True)):
        rows = np.flatnonzero(row_task == index)
        # The original model on the whole batch, as served: row subsets change float32 rounding.
        expected = predict(index, inputs)[rows]
        tolerance = RELATIVE_TOLERANCE * max(1.0, float(np.max(np.abs(expected))))
        difference = float(np.max(np.abs(outputs[rows, :width] - expected)))
        assert difference <= tolerance, f"{family.id} task {task!r}: max |diff| {difference:.3g} > {tolerance:.3g}"
        assert np.all(outputs[rows, width:] == 0), f"{family.id} task {task!r}: padding is not zero"
        assert [served["output_width"][r] for r in rows] == [width] * len(rows)
    return manifest


def test_one_changed_backbone_weight_fails_the_whole_import(family_files, api_client_for, celery_worker, tmp_path):
    family, paths = family_files("mobilenetv2_nested")
    changed = tmp_path / paths[1].name
    change = real_models.save_with_one_weight_changed(paths[1], changed, layer_name=family.perturb_layer)
    assert change["after"] != change["before"]
    client = api_client_for("ana")

    body = import_files(client, [paths[0], changed, paths[2]], feature_layer=family.feature_layer, timeout=300)

    assert body["status"] == "failed", json.dumps(body, indent=1)
    assert changed.name in body["error"], body["error"]
    report = {entry["filename"]: entry for entry in body["report"]}
    assert report[changed.name]["ok"] is False
    assert family.perturb_layer in report[changed.name]["error"], report[changed.name]
    for good in (paths[0].name, paths[2].name):
        assert report[good]["ok"] is False and not report[good].get("error"), report[good]
    assert BackboneVersion.objects.count() == 0 and HeadVersion.objects.count() == 0


# --------------------------------------------------------------------------- fine-tuned tops: branches

# Families whose models fine-tuned the top of the backbone (tests/real_models.py: top_layers,
# branch_point read off each architecture). The default run keeps the three shapes MobileNetV2
# does not have: a Transformer block, a string input with its vocabulary in the trunk, two inputs.
BRANCH_CASES = [
    "transformer_tokens",
    "text_vectorization",
    "two_inputs",
    pytest.param("mobilenetv2_mixed", marks=pytest.mark.slow),
    pytest.param("mobilenetv2_flat", marks=pytest.mark.slow),
]


class TunedModels:
    """The full models of an import where models 1 and 2 fine-tuned the backbone's top layers."""

    def __init__(self, family, paths, folder):
        import keras
        import tensorflow as tf

        folder.mkdir(parents=True, exist_ok=True)
        self.paths = [paths[0]]
        self.changed = {}
        for index in (1, 2):
            tuned = folder / paths[index].name
            self.changed[index] = real_models.fine_tune_top(
                paths[index], tuned, layer_names=family.top_layers, seed=index
            )
            self.paths.append(tuned)
        self.paths.extend(paths[3:])
        loaded = [keras.saving.load_model(path, safe_mode=True) for path in self.paths]
        self._graphs = [tf.function(lambda batch, m=model: m(batch, training=False)) for model in loaded]

    def predict(self, index, inputs):
        return np.asarray(self._graphs[index](real_models.model_inputs(inputs)), dtype=np.float32)


@pytest.mark.parametrize("family_id", BRANCH_CASES)
def test_real_family_fine_tuned_in_its_top_imports_with_branches_and_serves_every_model(
    family_id, family_files, api_client_for, celery_worker, tmp_path
):
    family, paths = family_files(family_id)
    tuned = TunedModels(family, paths, tmp_path / "tuned")
    assert all(count > 0 for changed in tuned.changed.values() for count in changed.values()), tuned.changed
    author = api_client_for("alice")
    reviewer = api_client_for("rita", role="reviewer")

    strict = import_files(author, tuned.paths, feature_layer=family.feature_layer, timeout=300)
    assert strict["status"] == "failed", json.dumps(strict, indent=1)
    assert [entry["ok"] for entry in strict["report"]] == [False] * len(tuned.paths)
    assert BackboneVersion.objects.count() == 0

    # min_shared_fraction 0: the text model's trunk is its vocabulary lookup alone (0 parameters).
    imported = import_files(
        author, tuned.paths, feature_layer=family.feature_layer, timeout=300, branches="true", min_shared_fraction="0"
    )
    assert imported["status"] == "succeeded", json.dumps(imported, indent=1)
    report = imported["report"]
    assert report[0]["branch"] is None
    for index in (1, 2):
        branch = report[index]["branch"]
        assert branch["after_layer"] == family.branch_point, json.dumps(report[index], indent=1)
        assert set(family.top_layers) <= set(branch["layers"]), branch
        assert family.branch_point not in branch["layers"]
        assert branch["params"] > 0 and report[index]["owned_bytes"] > 0
        head = HeadVersion.objects.get(pk=report[index]["head_version"])
        assert head.branch == branch and head.branch_blob_id is not None
    assert imported["summary"]["trunk"]["after_layer"] == family.branch_point
    assert BackboneVersion.objects.count() == 1

    manifest = approve_assemble_and_serve(author, reviewer, family, imported, tuned.predict, tmp_path, timeout=300)
    by_task = {entry["task"]: entry for entry in manifest["heads"]}
    assert by_task[family.tasks[0]]["branch"] is None
    assert {by_task[family.tasks[i]]["branch"]["after_layer"] for i in (1, 2)} == {family.branch_point}
    assert family.branch_point in manifest["backbone"]["trunk"]["branch_points"], manifest["backbone"]["trunk"]


def test_a_keras_hub_backbone_fine_tuned_in_its_top_is_refused_with_the_reason(
    family_files, api_client_for, celery_worker, tmp_path
):
    family, paths = family_files("keras_hub_bert")  # skipped where keras-hub is not installed
    tuned = TunedModels(family, paths, tmp_path / "tuned")
    client = api_client_for("alice")

    body = import_files(
        client, tuned.paths, feature_layer=family.feature_layer, timeout=300, branches="true", min_shared_fraction="0"
    )

    assert body["status"] == "failed", json.dumps(body, indent=1)
    errors = {entry["filename"]: entry.get("error") or "" for entry in body["report"]}
    for path in tuned.paths[1:]:
        assert "BertBackbone" in errors[path.name] and "cannot branch inside it" in errors[path.name], errors
        assert "output 'backbone'" in errors[path.name]
    assert BackboneVersion.objects.count() == 0 and HeadVersion.objects.count() == 0
