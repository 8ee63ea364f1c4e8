"""The `modelhub` command line against a mocked API: help, JSON as the API sends it, tables, exit codes, login."""

import io
import json
import os
import stat
import time

import httpx
import pytest
from modelhub_client import cli
from modelhub_client.config import config_path

from tests.client.fake_server import TOKEN, URL, FakeServer, envelope, page

HEAD = {
    "id": 7,
    "team": "vision",
    "task": "sentiment",
    "version": 2,
    "backbone": 3,
    "backbone_name": "shared",
    "backbone_version": 1,
    "status": "in_review",
    "error": "",
    "output_width": 3,
    "review": {"status": "in_review", "reviewed_by": None, "reviewed_at": None},
    "created_by": "ana",
}


@pytest.fixture
def server():
    return FakeServer()


@pytest.fixture
def run(server, monkeypatch, tmp_path, capsys):
    """Run `modelhub ARGS` against the fake server; return (exit status, stdout, stderr)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("MODELHUB_URL", URL)
    monkeypatch.setenv("MODELHUB_TOKEN", TOKEN)
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    real_client = cli.Client
    monkeypatch.setattr(cli, "Client", lambda *a, **kw: real_client(*a, **kw, transport=server.transport()))

    def run_cli(*args: str) -> tuple[int, str, str]:
        status = cli.main(list(args))
        out, err = capsys.readouterr()
        return status, out, err

    return run_cli


def all_commands(parser) -> list[list[str]]:
    """Return every command path of the parser, e.g. ["heads", "approve"]."""
    import argparse

    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths.append([name])
                paths += [[name, *rest] for rest in all_commands(sub)]
    return paths


def test_every_command_has_a_help_that_says_what_it_does(capsys):
    commands = all_commands(cli.build_parser())
    assert ["import"] in commands and ["heads", "request-changes"] in commands and ["jobs", "train-head"] in commands
    for command in [[], *commands]:
        with pytest.raises(SystemExit) as exited:
            cli.main([*command, "--help"])
        assert exited.value.code == 0
        text = capsys.readouterr().out
        assert text.startswith("usage: modelhub"), command
        assert len(text.splitlines()) > 3, command
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    top = capsys.readouterr().out
    for word in ("MODELHUB_URL", "MODELHUB_TOKEN", "login", "--json", "Exit status", "examples"):
        assert word in top


def test_a_command_line_that_does_not_parse_exits_2(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["assemble", "--team", "vision", "--backbone", "2", "--heads", "1,2", "--alias", "prod"])
    assert exited.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        cli.main(["heads", "request-changes", "7"])
    assert exited.value.code == 2 and "--comment" in capsys.readouterr().err


def test_json_prints_the_objects_exactly_as_the_api_sends_them(run, server):
    server.on("GET", "/api/heads/", page([HEAD, {**HEAD, "id": 8, "extra": {"kept": True}}]))
    status, out, _ = run("heads", "list", "--team", "vision", "--status", "in_review", "--json")
    assert status == 0
    assert json.loads(out) == [HEAD, {**HEAD, "id": 8, "extra": {"kept": True}}]
    assert dict(server.requests[0].url.params) == {
        "team": "vision",
        "status": "in_review",
        "page": "1",
        "page_size": "500",
    }


def test_human_output_is_a_table(run, server):
    server.on("GET", "/api/heads/", page([HEAD]))
    status, out, _ = run("heads", "list")
    lines = out.splitlines()
    assert status == 0 and lines[0].split() == [
        "ID",
        "TEAM",
        "TASK",
        "VERSION",
        "BACKBONE",
        "STATUS",
        "WIDTH",
        "AUTHOR",
        "REVIEWER",
    ]
    assert lines[1].split()[:6] == ["7", "vision", "sentiment", "v2", "shared", "v1"]
    server.routes.clear()
    server.on("GET", "/api/heads/", page([]))
    assert run("heads", "list")[1].strip() == "No heads match."


def test_a_refusal_exits_1_with_the_servers_message(run, server):
    message = "You authored head version 7; a different reviewer must approve it."
    server.on("POST", "/api/heads/7/approve/", (403, envelope("permission_denied", message)))
    status, out, err = run("heads", "approve", "7")
    assert status == 1 and out == ""
    assert message in err and "HTTP 403" in err
    status, out, err = run("heads", "approve", "7", "--json")
    assert status == 1 and json.loads(out) == envelope("permission_denied", message)


def test_several_heads_are_submitted_in_one_command(run, server):
    for head_id in (7, 8):
        server.on("POST", f"/api/heads/{head_id}/submit/", {**HEAD, "id": head_id})
    status, out, _ = run("heads", "submit", "7", "8", "--comment", "ready", "--json")
    assert status == 0 and [h["id"] for h in json.loads(out)] == [7, 8]
    assert all(FakeServer.json_of(r) == {"comment": "ready"} for r in server.requests)


def test_import_waits_prints_the_report_and_exits_1_when_it_failed(run, server, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "a.keras").write_bytes(b"a")
    server.on("GET", "/api/uploads/", page([]))
    server.on("POST", "/api/uploads/", (201, {"id": 1, "filename": "a.keras", "size_bytes": 1}))
    server.on("POST", "/api/imports/", (202, {"id": 4, "status": "queued"}))
    report = [{"filename": "a.keras", "task": "a", "ok": False, "error": "no shared backbone"}]
    failed = {"id": 4, "status": "failed", "error": "1 file could not be imported.", "report": report}
    server.on("GET", "/api/imports/4/", failed)

    status, out, err = run("import", str(models), "--team", "vision", "--backbone-name", "shared", "--wait")
    assert status == 1
    assert "a.keras" in out and "no shared backbone" in out
    assert "a.keras: uploaded" in err and "import 4 failed: 1 file could not be imported." in err

    status, out, _ = run("import", str(models), "--team", "vision", "--backbone-name", "shared", "--wait", "--json")
    assert status == 1 and json.loads(out) == failed


def test_assemble_waits_downloads_and_verifies(run, server, tmp_path):
    import hashlib

    data = b"zip bytes"
    ready = {
        "id": 3,
        "status": "ready",
        "backbone": 2,
        "tasks": [{"task_id": 0, "task": "sentiment", "head_version": 7, "version": 2, "output_width": 3}],
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
        "download_url": "/api/assemblies/3/download/",
    }
    server.on("POST", "/api/assemblies/", (202, {"id": 3, "status": "queued"}))
    server.on("GET", "/api/assemblies/3/", ready)
    server.on("GET", "/api/assemblies/3/download/", httpx.Response(200, content=data))
    target = tmp_path / "model.zip"
    status, out, _ = run("assemble", "--team", "vision", "--backbone", "2", "--heads", "7", "--download", str(target))
    assert status == 0 and target.read_bytes() == data
    assert "assembly 3 ready" in out and "sentiment" in out and "sha256 verified" in out
    assert FakeServer.json_of(server.sent("POST", "/api/assemblies/")[0])["heads"] == [7]


def test_train_head_follow_prints_the_log_and_the_outcome(run, server):
    server.on("POST", "/api/jobs/", (202, {"id": 8, "kind": "train_head", "status": "queued"}))
    server.on(
        "GET",
        "/api/jobs/8/",
        {"id": 8, "status": "running", "log": "[10:00:00] epoch 1/1: loss=0.5000\n"},
        {
            "id": 8,
            "kind": "train_head",
            "status": "failed",
            "error": "Out of memory.",
            "log": "[10:00:00] epoch 1/1: loss=0.5000\n",
        },
    )
    status, out, err = run(
        "jobs", "train-head", "--team", "vision", "--backbone", "2", "--dataset", "5", "--task", "t",
        "--head", "mlp", "--hidden", "16,8", "--epochs", "1", "--follow",
    )  # fmt: skip
    assert status == 1
    assert out.count("epoch 1/1: loss=0.5000") == 1 and "Out of memory." in err
    body = FakeServer.json_of(server.sent("POST", "/api/jobs/")[0])
    assert body["head"] == {"type": "mlp", "hidden": [16, 8]} and body["epochs"] == 1 and "seed" not in body


def test_login_saves_the_token_privately_and_later_commands_use_it(run, server, monkeypatch):
    monkeypatch.delenv("MODELHUB_URL")
    monkeypatch.delenv("MODELHUB_TOKEN")
    server.on("POST", "/api/auth/token/", {"token": "mh_from-login", "expires_at": "2026-12-30T10:00:00Z"})
    server.on("GET", "/api/teams/", page([{"slug": "vision", "name": "Vision", "role": "reviewer"}]))
    monkeypatch.setattr("sys.stdin", io.StringIO("pw-Secret-123\n"))

    status, out, _ = run("login", f"{URL}/api/", "--username", "ana", "--password-stdin")

    assert status == 0 and "Logged in to http://hub.test as ana" in out and "vision (reviewer)" in out
    assert FakeServer.json_of(server.requests[0]) == {"username": "ana", "password": "pw-Secret-123"}
    assert "Authorization" not in server.requests[0].headers
    path = config_path()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert 'token = "mh_from-login"' in path.read_text()

    server.on("GET", "/api/heads/", page([]))
    assert run("heads", "list")[0] == 0
    assert server.requests[-1].headers["Authorization"] == "Token mh_from-login"

    server.on("GET", "/api/tokens/", page([{"id": 4, "prefix": "mh_from-", "status": "active"}]))
    server.on("DELETE", "/api/tokens/4/", httpx.Response(204))
    status, out, _ = run("logout")
    assert status == 0 and "Revoked the token" in out and "mh_from-login" not in path.read_text()
    assert server.sent("DELETE", "/api/tokens/4/")[0].headers["Authorization"] == "Token mh_from-login"
    status, _, err = run("heads", "list")
    assert status == 1 and "No API token" in err


def test_login_with_a_wrong_password_saves_nothing(run, server, monkeypatch):
    monkeypatch.delenv("MODELHUB_URL")
    server.on("POST", "/api/auth/token/", (401, envelope("invalid_credentials", "Wrong username or password.")))
    monkeypatch.setattr("sys.stdin", io.StringIO("nope\n"))
    status, _, err = run("login", URL, "--username", "ana", "--password-stdin")
    assert status == 1 and "Wrong username or password." in err
    assert not config_path().exists()


def test_without_a_server_the_cli_says_how_to_configure_one(run, monkeypatch):
    monkeypatch.delenv("MODELHUB_URL")
    status, _, err = run("heads", "list")
    assert status == 1 and "MODELHUB_URL" in err and "modelhub login" in err


def test_datasets_upload_sends_the_column_mapping_and_waits(run, server, tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("review,sentiment\nGreat,pos\n")
    mapping = '{"inputs": {"text": "review"}, "label": "sentiment"}'
    validating = {"id": 4, "team": "vision", "name": "reviews", "format": "csv", "status": "validating"}
    ready = {**validating, "status": "ready", "num_examples": 1, "num_validation": 0, "target": "classes",
             "inputs": [{"name": "text", "kind": "string", "shape": [], "dtype": "string"}],
             "preview": {"label_order": "sorted", "label_distribution": {"pos": 1}, "rows": [{"review": "Great"}]},
             "fits": [{"id": 2, "label": "backbone 'bert' v1"}]}  # fmt: skip
    server.on("POST", "/api/datasets/", (202, validating)).on("GET", "/api/datasets/4/", ready)
    status, out, _ = run(
        "datasets", "upload", str(path), "--team", "vision", "--name", "reviews", "--columns", mapping, "--wait"
    )
    body = server.sent("POST", "/api/datasets/")[0].content
    assert status == 0 and b'name="columns"\r\n\r\n' + mapping.encode() in body and b"Great,pos" in body
    assert "input text: string string []" in out and "labels (sorted): {'pos': 1}" in out
    assert "fits backbone 'bert' v1 (id 2)" in out


def test_export_sends_the_dataset_only_when_given(run, server):
    queued = {"id": 3, "assembly": 7, "format": "litert", "quantization": "dynamic_int8", "status": "queued"}
    server.on("POST", "/api/assemblies/7/exports/", (202, queued))

    assert run("export", "7", "--format", "litert", "--quantization", "dynamic_int8", "--dataset", "4")[0] == 0
    assert run("export", "7", "--format", "litert", "--quantization", "dynamic_int8")[0] == 0

    with_dataset, without = (json.loads(r.content) for r in server.sent("POST", "/api/assemblies/7/exports/"))
    assert with_dataset == {"format": "litert", "quantization": "dynamic_int8", "dataset": 4}
    assert without == {"format": "litert", "quantization": "dynamic_int8"}
