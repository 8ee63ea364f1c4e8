"""The deployment bundle: TF Serving's models.config and Triton's config.pbtxt, parsed with the tools' own protos.

The fast test renders a config from rows-like objects and parses it with tensorflow-serving-api's
ModelServerConfig (.venv-clients). The slow test builds a real assembly from the alias 'champion'
with the session's worker, waits for the worker's rewrite (the assembly.ready event), checks the
labels, the SavedModel folder and the download API, deletes the alias and sees the label go; then
exports the assembly to ONNX and checks the Triton repository with tritonclient's ModelConfig.
"""

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import REPO_ROOT, wait_until
from tests.registry_helpers import import_and_approve, wait_status

CLIENT_PYTHON = REPO_ROOT / ".venv-clients" / "bin" / "python"
PARSE = Path(__file__).parent / "clients" / "parse_configs.py"


def parsed(kind: str, path: Path) -> dict:
    if not CLIENT_PYTHON.exists():
        pytest.skip("The clients' venv is missing: run scripts/venv_clients.sh (make test does).")
    result = subprocess.run(
        [str(CLIENT_PYTHON), str(PARSE), kind, str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"{kind} config did not parse:\n{path.read_text()}\n{result.stderr[-3000:]}"
    return json.loads(result.stdout)


def test_models_config_parses_with_tf_servings_protos_and_labels_the_newest_assembly(tmp_path):
    from bundles.config import model_server_config, served_models

    team = SimpleNamespace(slug="vision")
    backbone = SimpleNamespace(name="shared")

    def assembly(pk, alias=None, team_id=1):
        return SimpleNamespace(
            pk=pk, team=team, team_id=team_id, backbone=backbone, resolved_from={"alias": alias} if alias else {}
        )

    rows = [assembly(3, "champion"), assembly(5), assembly(7, "champion"), assembly(8, "gone")]
    models = served_models(rows, alias_names_by_team={1: {"champion"}})
    path = tmp_path / "models.config"
    path.write_text(model_server_config(models, base_path="/models/tfserving"))
    (config,) = parsed("tfserving", path)["model_config_list"]["config"]
    assert config["name"] == "vision.shared" and config["base_path"] == "/models/tfserving/vision.shared"
    assert config["model_platform"] == "tensorflow"
    assert config["version_labels"] == {"champion": "7"}  # the newest built from it; a deleted alias has none
    assert sorted(int(v) for v in config["model_version_policy"]["specific"]["versions"]) == [7, 8]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_bundle_follows_assemblies_and_aliases_and_holds_a_triton_repository(
    api_client_for, model_files, celery_worker
):
    from django.conf import settings

    author, reviewer = api_client_for("bd-author"), api_client_for("bd-reviewer", role="reviewer")
    imported = import_and_approve(author, reviewer, model_files)
    heads = {entry["task"]: entry["head_version"] for entry in imported["report"]}
    alias = reviewer.post(
        "/api/aliases/",
        {"team": "vision", "task": "sentiment", "name": "champion", "head": heads["sentiment"]},
        format="json",
    )
    assert alias.status_code in (200, 201), alias.json()
    created = author.post(
        "/api/assemblies/", {"team": "vision", "backbone": imported["backbone"], "alias": "champion"}, format="json"
    )
    assert created.status_code == 202, created.json()
    assembly = wait_status(
        author, f"/api/assemblies/{created.json()['id']}/", pending=("queued", "building", "verifying"), timeout=240
    )
    assert assembly["status"] == "ready", assembly

    root = Path(settings.MODELHUB_BUNDLE_ROOT)
    config_path = root / "tfserving" / "models.config"

    def labels() -> dict | None:
        if not config_path.exists():
            return None
        configs = parsed("tfserving", config_path)["model_config_list"]["config"]
        return {config["name"]: config.get("version_labels", {}) for config in configs}

    wait_until(
        lambda: (labels() or {}).get("vision.shared") == {"champion": str(assembly["id"])},
        timeout=60,
        message="the champion label",
    )
    assert (root / "tfserving" / "vision.shared" / str(assembly["id"]) / "saved_model.pb").exists()
    download = author.get("/api/bundles/tfserving/models.config", {"team": "vision"})
    assert download.status_code == 200 and b'key: "champion"' in download.content

    alias_id = alias.json()["id"]
    assert reviewer.delete(f"/api/aliases/{alias_id}/").status_code in (200, 204)
    wait_until(lambda: (labels() or {}).get("vision.shared") == {}, timeout=60, message="the label to go")

    export = author.post(
        f"/api/assemblies/{assembly['id']}/exports/", {"format": "onnx", "quantization": "none"}, format="json"
    )
    assert export.status_code in (200, 202), export.json()
    done = wait_status(
        author,
        f"/api/assemblies/{assembly['id']}/exports/{export.json()['id']}/",
        pending=("queued", "exporting"),
        timeout=300,
    )
    assert done["status"] == "ready", done
    from bundles.work import bundle_write  # an export becoming ready emits no event yet (see the README)

    bundle_write()
    triton = root / "triton" / "vision.shared"
    assert (triton / str(assembly["id"]) / "model.onnx").stat().st_size > 0
    config = parsed("triton", triton / "config.pbtxt")
    assert config["platform"] == "onnxruntime_onnx" and "dynamic_batching" in config
    inputs = {item["name"]: item for item in config["input"]}
    assert inputs["inputs"]["dims"] == ["8"] and inputs["inputs"]["data_type"] == "TYPE_FP32"
    assert inputs["task_id"]["data_type"] == "TYPE_INT32"
    outputs = {item["name"] for item in config["output"]}
    assert outputs == {"outputs", "output_width"}
