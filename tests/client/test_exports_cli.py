"""`modelhub export` against a live server and a real worker: a LiteRT export (dynamic_int8) waited for,
downloaded (sha256 checked) and opened by the LiteRT interpreter; the same command again answers the
existing export; `modelhub exports list` shows it. Slow: it imports, assembles and converts."""

import hashlib

import pytest

from tests.assemblies.test_exports_worker import ready_assembly

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.slow
def test_cli_exports_to_litert_waits_and_downloads(make_member, model_files, celery_worker, live_server, tmp_path,
                                                   monkeypatch, capsys):  # fmt: skip
    import json

    from modelhub_client import cli
    from rest_framework.test import APIClient

    user, token = make_member("alice")
    author = APIClient()
    author.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assembly = ready_assembly(author, _client(make_member("rita", role="reviewer")[1]), model_files)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("MODELHUB_URL", live_server.url)
    monkeypatch.setenv("MODELHUB_TOKEN", token)
    target = tmp_path / "model.tflite"
    args = ["export", str(assembly["id"]), "--format", "litert", "--quantization", "dynamic_int8"]
    status = cli.main([*args, "--wait", "--timeout", "300", "--download", str(target), "--json"])
    out, err = capsys.readouterr()
    assert status == 0, out + err
    export = json.loads(out)
    assert (export["status"], export["format"], export["quantization"]) == ("ready", "litert", "dynamic_int8")
    assert hashlib.sha256(target.read_bytes()).hexdigest() == export["sha256"]
    assert all(0.0 <= t["argmax_agreement"] <= 1.0 for t in export["report"]["tasks"])
    from ai_edge_litert.interpreter import Interpreter

    Interpreter(model_path=str(target)).allocate_tensors()  # a file the LiteRT interpreter opens
    status = cli.main([*args])  # the same request: the existing export, printed for people
    out, _ = capsys.readouterr()
    assert (
        status == 0 and f"export {export['id']} (litert, dynamic_int8) of assembly {assembly['id']} (existing)" in out
    )
    status = cli.main(["exports", "list", str(assembly["id"])])
    out, _ = capsys.readouterr()
    assert status == 0 and "litert" in out and "dynamic_int8" in out


def _client(token: str):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client
