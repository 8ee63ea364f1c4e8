"""Trunk and branches end to end: models fine-tuned in the top of a MobileNetV2, through the HTTP API.

Five full models share one keras.applications MobileNetV2 base: two are plain heads, three
fine-tuned their top 1, 2 and 4 inverted-residual blocks (tests/branched_models.py). The strict
import fails naming those three; the branch import keeps their top layers as branches; the
heads are reviewed and assembled, and the downloaded SavedModel, run in a fresh process that
imports only TensorFlow, reproduces every ORIGINAL full model on a batch mixing all tasks.
"""

import io
import json
import zipfile

import numpy as np
import pytest

from heads.models import HeadVersion
from modelhub.backbones.models import BackboneVersion
from tests.branched_models import BRANCH_POINTS, build_branched_family
from tests.heads.test_real_models import import_files, run_fresh_process
from tests.registry_helpers import wait_status

pytestmark = pytest.mark.django_db(transaction=True)

TOPS = [0, 0, 1, 2, 4]
RELATIVE_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def branched(tmp_path_factory):
    family = build_branched_family(TOPS)
    return family, family.save(tmp_path_factory.mktemp("branched"))


def _import(client, paths, **fields):
    response = client.post(
        "/api/imports/",
        {"team": "vision", "backbone_name": "shared", **fields, "files": [open(p, "rb") for p in paths]},
        format="multipart",
    )
    assert response.status_code == 202, response.json()
    return wait_status(client, f"/api/imports/{response.json()['id']}/", timeout=300)


def test_strict_import_fails_then_branch_import_serves_every_original_model(
    branched, api_client_for, celery_worker, tmp_path
):
    family, paths = branched
    author = api_client_for("alice")
    reviewer = api_client_for("rita", role="reviewer")

    # Strict (the default): the fine-tuned models fail the whole import, each named.
    strict = import_files(author, paths, feature_layer=None, timeout=300)
    assert strict["status"] == "failed"
    failed = [entry["filename"] for entry in strict["report"] if entry.get("error")]
    assert failed == [paths[i].name for i, k in enumerate(TOPS) if k]
    assert HeadVersion.objects.count() == 0 and BackboneVersion.objects.count() == 0

    # With branches: one backbone, plain heads for the untouched models, branches for the others.
    imported = _import(author, paths, branches="true", min_shared_fraction="0.2")
    assert imported["status"] == "succeeded", json.dumps(imported, indent=1)
    assert imported["branches"] is True and imported["min_shared_fraction"] == 0.2
    assert imported["summary"]["trunk"]["after_layer"] == BRANCH_POINTS[4]
    assert BackboneVersion.objects.count() == 1
    for entry, k in zip(imported["report"], TOPS, strict=True):
        head = author.get(f"/api/heads/{entry['head_version']}/").json()
        if k == 0:
            assert entry["branch"] is None and head["branch"] is None
            continue
        assert entry["branch"]["after_layer"] == BRANCH_POINTS[k]
        assert head["branch"] == entry["branch"]
        assert entry["shared_bytes"] > 0 and entry["owned_bytes"] > entry["branch"]["params"] * 4 - 1
    params = [imported["report"][i]["branch"]["params"] for i in (2, 3, 4)]
    assert params == sorted(params) and len(set(params)) == 3  # deeper fine-tunes own more

    for entry in imported["report"]:
        assert author.post(f"/api/heads/{entry['head_version']}/submit/").status_code == 200
        assert reviewer.post(f"/api/heads/{entry['head_version']}/approve/").status_code == 200
    response = author.post("/api/assemblies/", {"team": "vision", "backbone": imported["backbone"]}, format="json")
    assert response.status_code == 202, response.json()
    assembly = wait_status(
        author, f"/api/assemblies/{response.json()['id']}/", pending=("queued", "building", "verifying"), timeout=300
    )
    assert assembly["status"] == "ready", json.dumps(assembly, indent=1)
    download = author.get(f"/api/assemblies/{assembly['id']}/download/")
    zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content))).extractall(tmp_path)
    model_dir = tmp_path / "model"
    manifest = json.loads((model_dir / "assets" / "manifest.json").read_text())
    assert manifest["backbone"]["trunk"]["branch_points"] == [BRANCH_POINTS[4], BRANCH_POINTS[2], BRANCH_POINTS[1]]
    by_task = {entry["task"]: entry for entry in manifest["heads"]}
    for task, k in zip(family.tasks, TOPS, strict=True):
        branch = by_task[task]["branch"]
        assert (branch is None) == (k == 0)
        if branch:
            assert branch["after_layer"] == BRANCH_POINTS[k] and branch["params"] > 0

    # A batch mixing every task, run where only TensorFlow is imported.
    num_rows = 3 * len(TOPS)
    inputs = family.sample_inputs(num_rows, 7)
    row_task = np.arange(num_rows) % len(TOPS)
    np.savez(
        tmp_path / "batch.npz",
        inputs=inputs,
        task_id=np.array([by_task[family.tasks[k]]["task_id"] for k in row_task], np.int32),
    )
    served = run_fresh_process(model_dir, tmp_path / "batch.npz")
    assert served["modules"] == []
    outputs = np.asarray(served["outputs"], np.float32)
    for index, width in enumerate(family.widths):
        rows = np.flatnonzero(row_task == index)
        expected = family.predict(index, inputs)[rows]
        tolerance = RELATIVE_TOLERANCE * max(1.0, float(np.max(np.abs(expected))))
        difference = float(np.max(np.abs(outputs[rows, :width] - expected)))
        assert difference <= tolerance, f"task {index} (top {TOPS[index]} blocks): {difference:.3g} > {tolerance:.3g}"
        assert np.all(outputs[rows, width:] == 0)
