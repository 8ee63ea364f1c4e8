"""MLflow's registry client against ModelHub: an unmodified MlflowClient (mlflow-skinny, .venv-clients) reads
tasks as registered models, moves aliases under four eyes and downloads a version's full Keras model.

The live test runs gunicorn and a worker on the test database (tests/api/live_app.py) and the client
as a subprocess (tests/protocols/clients/mlflow_calls.py). The downloaded model.keras is loaded in
this process with keras.saving.load_model and held against the original full model the head was
imported from (an independent figure: the import cut it into backbone + head, the worker composed them
back). The fast tests check the filter grammar and MLflow's error shape in-process.
"""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.api.live_app import LiveClient, flush_redis, isolated_env, live_server, live_worker
from tests.conftest import REPO_ROOT
from tests.registry_helpers import import_and_approve

CLIENT_PYTHON = REPO_ROOT / ".venv-clients" / "bin" / "python"
CALLS = Path(__file__).parent / "clients" / "mlflow_calls.py"


def mlflow_calls(url: str, token: str, calls: list) -> list[dict]:
    """Run MlflowClient calls as a user (MLFLOW_TRACKING_TOKEN = their ModelHub token); return the results."""
    if not CLIENT_PYTHON.exists():
        pytest.skip("The clients' venv is missing: run scripts/venv_clients.sh (make test does).")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "MLFLOW_TRACKING_URI": url,
        "MLFLOW_TRACKING_TOKEN": token,
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
    }
    result = subprocess.run(
        [str(CLIENT_PYTHON), str(CALLS), json.dumps(calls)], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"mlflow client failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- Fast: the filter grammar and the error shape -------------------------------------------------


def test_filter_understands_what_mlflow_3_sends_and_refuses_the_rest():
    from core.errors import ValidationError
    from mlflow_api.filters import parse_filter

    prompt_filter = "tags.`mlflow.prompt.is_prompt` != 'true'"
    assert parse_filter(prompt_filter)("vision.sentiment", {})
    assert not parse_filter(prompt_filter)("x.y", {"mlflow.prompt.is_prompt": "true"})
    match = parse_filter(f"name LIKE 'vision.%' AND {prompt_filter}")
    assert match("vision.sentiment", {}) and not match("audio.sentiment", {})
    assert parse_filter("name = 'a.b'")("a.b", {}) and not parse_filter("name='a.b'")("a.bc", {})
    assert parse_filter("name ILIKE 'A.%'")("a.b", {}) and not parse_filter("name LIKE 'A.%'")("a.b", {})
    assert not parse_filter("tags.modelhub.status = 'approved'")("a.b", {})  # a missing tag is NULL
    with pytest.raises(ValidationError, match="understands") as caught:
        parse_filter("run_id = 'abc'")
    assert caught.value.code == "INVALID_PARAMETER_VALUE"


@pytest.mark.django_db
def test_errors_have_mlflows_shape_and_codes(api_client_for, make_member):
    from rest_framework.test import APIClient

    from heads.models import Task
    from teams.models import Team

    reader = api_client_for("mf-reader", role="member")
    Task.objects.create(team=Team.objects.get(slug="vision"), slug="sentiment")
    _, token = make_member("mf-outsider", team="audio")

    unknown = reader.get("/api/2.0/mlflow/experiments/search")
    assert unknown.status_code == 404 and unknown.json()["error_code"] == "ENDPOINT_NOT_FOUND"
    bad_name = reader.get("/api/2.0/mlflow/registered-models/get", {"name": "no-dot"})
    assert bad_name.status_code == 400 and bad_name.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "'<team>.<task>'" in bad_name.json()["message"]
    bad_version = reader.get("/api/2.0/mlflow/model-versions/get", {"name": "vision.sentiment", "version": "x"})
    assert bad_version.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    missing = reader.get("/api/2.0/mlflow/model-versions/get", {"name": "vision.sentiment", "version": "3"})
    assert missing.status_code == 404 and missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    got = reader.get("/api/2.0/mlflow/registered-models/get", {"name": "vision.sentiment"})
    assert got.status_code == 200 and got.json()["registered_model"]["name"] == "vision.sentiment"

    # MLflow sends its token as Bearer; a non-member sees nothing of the team (404, never 403).
    outsider = APIClient()
    outsider.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    hidden = outsider.get("/api/2.0/mlflow/registered-models/get", {"name": "vision.sentiment"})
    assert hidden.status_code == 404 and hidden.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    listed = outsider.get("/api/2.0/mlflow/registered-models/search")
    assert listed.status_code == 200 and listed.json()["registered_models"] == []
    anonymous = APIClient().get("/api/2.0/mlflow/registered-models/search")
    assert anonymous.status_code == 401 and anonymous.json()["error_code"] == "UNAUTHENTICATED"
    wrong_token = APIClient()
    wrong_token.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    assert wrong_token.get("/api/2.0/mlflow/registered-models/search").json()["error_code"] == "UNAUTHENTICATED"


# --- Slow: the unmodified client against a live app -----------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_mlflow_client_reads_moves_aliases_with_four_eyes_and_downloads_the_full_model(
    make_member, model_files, tmp_path
):
    import keras

    env = isolated_env(MODELHUB_PREDICT_MAX_WAIT="30")
    flush_redis(env["CELERY_BROKER_URL"])
    tokens = {name: make_member(f"mf-{name}", role=role)[1] for name, role in
              [("author", "reviewer"), ("reviewer", "reviewer"), ("member", "member")]}  # fmt: skip
    with live_worker(env, tmp_path / "worker.log"), live_server(env, tmp_path / "server.log") as url:
        author, reviewer = LiveClient(url, tokens["author"]), LiveClient(url, tokens["reviewer"])
        import_and_approve(author, reviewer, model_files)
        name, destination = "vision.sentiment", tmp_path / "download"
        destination.mkdir()

        set_alias = ["set_registered_model_alias", name, "champion", "1"]
        assert mlflow_calls(url, tokens["member"], [set_alias])[0]["error_code"] == "PERMISSION_DENIED"
        denied = mlflow_calls(url, tokens["author"], [set_alias])[0]
        assert denied["error_code"] == "PERMISSION_DENIED" and "author" in denied["message"], denied

        searched, model, versions, version, _, by_alias, downloaded, after = mlflow_calls(
            url,
            tokens["reviewer"],
            [
                ["search_registered_models"],
                ["get_registered_model", name],
                ["search_model_versions", f"name='{name}'"],
                ["get_model_version", name, "1"],
                set_alias,
                ["get_model_version_by_alias", name, "champion"],
                ["download_artifacts", f"models:/{name}@champion", str(destination)],
                ["get_registered_model", name],
            ],
        )
        assert {m["name"] for m in searched["ok"]} == {"vision.sentiment", "vision.topic", "vision.box"}, searched
        assert model["ok"]["name"] == name and model["ok"]["aliases"] == {}
        assert [v["version"] for v in versions["ok"]] == ["1"] and versions["ok"][0]["status"] == "READY"
        assert version["ok"]["tags"]["modelhub.status"] == "approved"
        assert by_alias["ok"]["version"] == "1" and by_alias["ok"]["aliases"] == ["champion"]
        assert after["ok"]["aliases"] == {"champion": "1"}

        assert (
            mlflow_calls(url, tokens["member"], [["delete_registered_model_alias", name, "champion"]])[0]["error_code"]
            == "PERMISSION_DENIED"
        )
        deleted, gone = mlflow_calls(
            url,
            tokens["reviewer"],
            [["delete_registered_model_alias", name, "champion"], ["get_model_version_by_alias", name, "champion"]],
        )
        assert "ok" in deleted and gone["error_code"] == "RESOURCE_DOES_NOT_EXIST"

    folder = Path(downloaded["ok"])
    assert sorted(path.name for path in folder.iterdir()) == ["MLmodel", "model.keras"]
    assert "keras" in (folder / "MLmodel").read_text()
    loaded = keras.saving.load_model(folder / "model.keras")
    original = keras.saving.load_model(model_files["full_sentiment"])
    rows = np.random.default_rng(3).normal(size=(16, 8)).astype("float32")
    expected, got = np.asarray(original(rows)), np.asarray(loaded(rows))
    assert got.shape == expected.shape == (16, 3)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
