"""modelhub_client.Client against a mocked API (httpx.MockTransport): no server, no Django, no TensorFlow."""

import hashlib
import json
import time

import httpx
import pytest
from modelhub_client import Assembly, Client, Head, Job, ModelHubError, ModelImport, transfers

from tests.client.fake_server import TOKEN, URL, FakeServer, envelope, page


@pytest.fixture
def server():
    return FakeServer()


@pytest.fixture
def hub(server, monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    with Client(URL, TOKEN, transport=server.transport(), progress=False) as client:
        yield client


def upload_body(upload_id: int, name: str, data: bytes, **extra) -> dict:
    return {
        "id": upload_id,
        "team": "vision",
        "filename": name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
        "created_by": "ana",
        "created_at": "2026-11-30T10:00:00Z",
        **extra,
    }


# --- Requests and errors ---------------------------------------------------------------------


def test_every_request_carries_the_token_and_the_client_version(hub, server):
    server.on("GET", "/api/teams/", page([{"slug": "vision", "name": "Vision", "role": "member"}]))
    teams = hub.teams()
    assert [(t.slug, t.role) for t in teams] == [("vision", "member")]
    request = server.requests[0]
    assert request.headers["Authorization"] == f"Token {TOKEN}"
    assert request.headers["User-Agent"].startswith("modelhub-client/")


def test_a_server_error_raises_its_envelope_and_status(hub, server):
    detail = {"current_status": "draft"}
    server.on("POST", "/api/heads/7/approve/", (409, envelope("invalid_transition", "Head 7 is draft.", detail)))
    with pytest.raises(ModelHubError) as raised:
        hub.approve(7)
    error = raised.value
    assert (error.status, error.code, error.message, error.detail) == (
        409,
        "invalid_transition",
        "Head 7 is draft.",
        detail,
    )
    assert error.envelope() == envelope("invalid_transition", "Head 7 is draft.", detail)
    assert "HTTP 409" in str(error) and "invalid_transition" in str(error)


def test_an_answer_without_the_envelope_still_raises_with_its_status(hub, server):
    server.on("GET", "/api/heads/1/", httpx.Response(502, text="<html>Bad Gateway</html>"))
    with pytest.raises(ModelHubError) as raised:
        hub.head(1)
    assert (raised.value.status, raised.value.code) == (502, "http_502")
    assert "Bad Gateway" in raised.value.message and "MODELHUB_URL" in raised.value.message


def test_a_redirect_or_a_page_that_is_not_json_says_which_url_to_use(hub, server):
    server.on("GET", "/api/teams/", httpx.Response(301, headers={"Location": "https://hub.test/api/teams/"}))
    with pytest.raises(ModelHubError) as raised:
        hub.teams()
    assert raised.value.code == "redirect" and "https://hub.test/api/teams/" in raised.value.message
    server.on("GET", "/api/heads/3/", httpx.Response(200, text="<html>Sign in</html>"))
    with pytest.raises(ModelHubError) as raised:
        hub.head(3)
    assert raised.value.code == "invalid_response" and "not JSON" in raised.value.message


def test_no_answer_at_all_is_a_connection_error():
    def refuse(request):
        raise httpx.ConnectError("connection refused")

    with Client(URL, TOKEN, transport=httpx.MockTransport(refuse)) as hub, pytest.raises(ModelHubError) as raised:
        hub.teams()
    assert raised.value.status is None and raised.value.code == "connection_error"
    assert URL in raised.value.message


def test_without_a_token_nothing_is_sent(server, monkeypatch):
    monkeypatch.delenv("MODELHUB_TOKEN", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", "/nonexistent")
    with Client(URL, transport=server.transport()) as hub, pytest.raises(ModelHubError) as raised:
        hub.heads()
    assert raised.value.code == "not_authenticated" and "modelhub login" in raised.value.message
    assert server.requests == []


def test_lists_follow_every_page_with_the_filters(hub, server):
    first = [{"id": i, "status": "draft", "task": f"t{i}"} for i in (1, 2)]
    server.on("GET", "/api/heads/", page(first, next_page=True), page([{"id": 3, "status": "draft", "task": "t3"}]))
    heads = hub.heads(team="vision", status="draft", task=None)
    assert [h.id for h in heads] == [1, 2, 3] and all(isinstance(h, Head) for h in heads)
    queries = [dict(r.url.params) for r in server.sent("GET", "/api/heads/")]
    assert queries == [
        {"team": "vision", "status": "draft", "page": "1", "page_size": "500"},
        {"team": "vision", "status": "draft", "page": "2", "page_size": "500"},
    ]


def test_objects_keep_the_body_they_were_read_from(hub, server):
    body = {"id": 5, "status": "approved", "task": "sentiment", "a_field_from_a_newer_server": [1]}
    server.on("GET", "/api/heads/5/", body)
    head = hub.head(5)
    assert (head.id, head.status, head.task, head.labels) == (5, "approved", "sentiment", None)
    assert head.raw == body


def test_review_transitions_post_the_comment(hub, server):
    for action in ("submit", "approve", "request_changes"):
        server.on("POST", f"/api/heads/9/{action}/", {"id": 9, "status": "in_review"})
    hub.submit(9)
    hub.approve(Head.from_api({"id": 9}), comment="LGTM")
    hub.request_changes(9, "more data")
    comments = [(r.url.path, FakeServer.json_of(r)) for r in server.requests]
    assert comments == [
        ("/api/heads/9/submit/", {"comment": ""}),
        ("/api/heads/9/approve/", {"comment": "LGTM"}),
        ("/api/heads/9/request_changes/", {"comment": "more data"}),
    ]


# --- Imports ---------------------------------------------------------------------------------


def test_import_uploads_new_files_skips_known_ones_and_names_them_in_order(hub, server, tmp_path):
    files = {"b-topic.keras": b"topic bytes", "a-sentiment.keras": b"sentiment bytes", "notes.txt": b"not a model"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    known = upload_body(11, "a-sentiment.keras", files["a-sentiment.keras"])

    def lookup(request):
        assert request.url.params["team"] == "vision"
        found = [known] if request.url.params["sha256"] == known["sha256"] else []
        return page(found)

    def receive(request):
        assert b'name="team"\r\n\r\nvision' in request.content
        assert b'filename="b-topic.keras"' in request.content and files["b-topic.keras"] in request.content
        return (201, upload_body(12, "b-topic.keras", files["b-topic.keras"], deduplicated=False))

    server.on("GET", "/api/uploads/", lookup)
    server.on("POST", "/api/uploads/", receive)
    queued = {"id": 4, "team": "vision", "backbone_name": "shared", "status": "queued", "report": []}
    server.on("POST", "/api/imports/", (202, queued))

    model_import = hub.import_models(tmp_path, team="vision", backbone_name="shared")

    assert isinstance(model_import, ModelImport) and model_import.status == "queued"
    assert len(server.sent("POST", "/api/uploads/")) == 1  # the known file was not sent again
    assert FakeServer.json_of(server.sent("POST", "/api/imports/")[0]) == {
        "team": "vision",
        "backbone_name": "shared",
        "uploads": [11, 12],  # file name order
        "branches": False,
    }


def test_import_passes_feature_layer_tasks_and_branches_and_waits(hub, server, tmp_path):
    paths = []
    for name in ("x.keras", "y.keras"):
        (tmp_path / name).write_bytes(name.encode())
        paths.append(tmp_path / name)
    server.on("GET", "/api/uploads/", page([]))
    server.on("POST", "/api/uploads/", (201, upload_body(1, "x.keras", b"x")), (201, upload_body(2, "y.keras", b"y")))
    server.on("POST", "/api/imports/", (202, {"id": 4, "status": "queued"}))
    report = [{"filename": "x.keras", "task": "a", "ok": True, "head_version": 21}]
    server.on(
        "GET",
        "/api/imports/4/",
        {"id": 4, "status": "running"},
        {"id": 4, "status": "succeeded", "report": report, "backbone": 3},
    )

    done = hub.import_models(
        paths,
        team="vision",
        backbone_name="shared",
        feature_layer="features",
        branches=True,
        tasks=["a", "b"],
        wait=True,
    )

    assert (done.status, done.backbone, done.head_ids, done.done, done.failed) == ("succeeded", 3, [21], True, False)
    body = FakeServer.json_of(server.sent("POST", "/api/imports/")[0])
    assert (body["feature_layer"], body["tasks"], body["branches"], body["uploads"]) == (
        "features",
        ["a", "b"],
        True,
        [1, 2],
    )
    assert len(server.sent("GET", "/api/imports/4/")) == 2


def test_import_of_an_empty_folder_says_how_to_make_files(hub, server, tmp_path):
    with pytest.raises(ModelHubError) as raised:
        hub.import_models(tmp_path, team="vision", backbone_name="shared")
    assert raised.value.code == "no_files" and "model.save" in raised.value.message
    assert server.requests == []


def test_upload_progress_bar_counts_the_bytes_sent(server, tmp_path, monkeypatch):
    bars = []

    class RecordingBar(transfers.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(transfers, "tqdm", RecordingBar)
    data = b"w" * 200_000
    (tmp_path / "big.keras").write_bytes(data)
    server.on("POST", "/api/uploads/", (201, upload_body(1, "big.keras", data)))
    with Client(URL, TOKEN, transport=server.transport(), progress=True) as hub:
        hub.upload(tmp_path / "big.keras", team="vision", skip_existing=False)
    assert bars[0].total == len(data) and bars[0].n == len(data)
    assert data in server.requests[0].content


# --- Assemblies, waiting, downloads ----------------------------------------------------------


def test_assemble_sends_heads_and_waits_until_ready(hub, server):
    server.on("POST", "/api/assemblies/", (202, {"id": 3, "status": "queued", "existing": False}))
    server.on(
        "GET",
        "/api/assemblies/3/",
        {"id": 3, "status": "building"},
        {"id": 3, "status": "verifying"},
        {"id": 3, "status": "ready", "sha256": "ab", "download_url": "/api/assemblies/3/download/"},
    )
    assembly = hub.assemble(team="vision", backbone=2, heads=[Head.from_api({"id": 7}), 8], name="v1", wait=True)
    assert isinstance(assembly, Assembly) and assembly.status == "ready"
    assert FakeServer.json_of(server.sent("POST", "/api/assemblies/")[0]) == {
        "team": "vision",
        "backbone": 2,
        "heads": [7, 8],
        "name": "v1",
    }


def test_an_alias_is_not_sent_to_a_server_that_would_ignore_it(hub, server):
    schema = {"components": {"schemas": {"AssemblyCreateRequest": {"properties": {"team": {}, "heads": {}}}}}}
    server.on("GET", "/api/schema/", schema)
    with pytest.raises(ModelHubError) as raised:
        hub.assemble(team="vision", backbone=2, alias="production")
    assert raised.value.code == "not_supported" and "alias" in raised.value.message
    assert server.sent("POST", "/api/assemblies/") == []  # no assembly of every approved head instead


def test_an_alias_goes_through_and_the_servers_answer_comes_back(hub, server):
    schema = {"components": {"schemas": {"AssemblyCreateRequest": {"properties": {"alias": {}}}}}}
    server.on("GET", "/api/schema/", schema)
    server.on("POST", "/api/assemblies/", (404, envelope("alias_not_found", "No alias 'production' in team vision.")))
    with pytest.raises(ModelHubError) as raised:
        hub.assemble(team="vision", backbone=2, alias="production")
    assert (raised.value.status, raised.value.code) == (404, "alias_not_found")
    assert FakeServer.json_of(server.sent("POST", "/api/assemblies/")[0])["alias"] == "production"
    with pytest.raises(ModelHubError, match="not both"):
        hub.assemble(team="vision", backbone=2, alias="production", heads=[1])


def test_aliases_of_a_server_without_them_raise_its_404(hub):
    with pytest.raises(ModelHubError) as raised:
        hub.aliases()
    assert (raised.value.status, raised.value.code) == (404, "not_found")


def test_wait_polls_through_a_brief_outage_and_gives_up_after_its_timeout(hub, server, monkeypatch):
    server.on(
        "GET",
        "/api/jobs/5/",
        (503, envelope("database_unavailable", "The database is not answering right now.")),
        {"id": 5, "status": "succeeded"},
    )
    assert hub.wait(Job.from_api({"id": 5, "status": "queued"})).status == "succeeded"

    clock = iter(range(0, 10_000, 10))
    monkeypatch.setattr(time, "monotonic", lambda: next(clock))
    server.on("GET", "/api/jobs/6/", {"id": 6, "status": "running"})
    with pytest.raises(ModelHubError) as raised:
        hub.wait(Job.from_api({"id": 6, "status": "queued"}), timeout=60)
    assert raised.value.code == "timeout" and "still 'running'" in raised.value.message


def test_wait_returns_a_failed_object_and_raises_a_real_error(hub, server):
    server.on("GET", "/api/imports/4/", {"id": 4, "status": "failed", "error": "b.keras: another backbone"})
    failed = hub.wait(ModelImport.from_api({"id": 4, "status": "queued"}))
    assert failed.failed and failed.error == "b.keras: another backbone"
    server.on("GET", "/api/imports/5/", (404, envelope("not_found", "Import 5 was not found in any of your teams.")))
    with pytest.raises(ModelHubError, match="Import 5 was not found"):
        hub.wait(ModelImport.from_api({"id": 5, "status": "queued"}))


def ready_assembly(data: bytes, *, sha256: str | None = None) -> dict:
    return {
        "id": 3,
        "status": "ready",
        "sha256": sha256 or hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
        "download_url": "/api/assemblies/3/download/",
    }


def zip_response(data: bytes) -> httpx.Response:
    headers = {
        "Content-Disposition": "attachment; filename=\"vision v1.zip\"; filename*=UTF-8''vision%20v1.zip",
        "Content-Length": str(len(data)),
        "X-Checksum-Sha256": hashlib.sha256(data).hexdigest(),
    }
    return httpx.Response(200, content=data, headers=headers)


def test_download_streams_to_the_file_and_checks_the_sha256(hub, server, tmp_path):
    data = b"PK zipped saved model" * 1000
    server.on("GET", "/api/assemblies/3/", ready_assembly(data))
    server.on("GET", "/api/assemblies/3/download/", zip_response(data))
    path = hub.download(Assembly.from_api({"id": 3, "status": "queued"}), tmp_path / "model.zip")
    assert path == tmp_path / "model.zip" and path.read_bytes() == data
    into_folder = hub.download(3, tmp_path)
    assert into_folder == tmp_path / "vision v1.zip" and into_folder.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.zip", "vision v1.zip"]  # no partial files


def test_a_corrupt_download_leaves_no_file(hub, server, tmp_path):
    data = b"the real bytes"
    server.on("GET", "/api/assemblies/3/", ready_assembly(data, sha256="0" * 64))
    server.on("GET", "/api/assemblies/3/download/", zip_response(data))
    with pytest.raises(ModelHubError) as raised:
        hub.download(3, tmp_path / "model.zip")
    assert raised.value.code == "checksum_mismatch" and raised.value.detail["expected"] == "0" * 64
    assert list(tmp_path.iterdir()) == []


def test_a_redirected_download_is_refused_and_leaves_no_file(hub, server, tmp_path):
    data = b"the real bytes"
    server.on("GET", "/api/assemblies/3/", ready_assembly(data))
    server.on("GET", "/api/assemblies/3/download/", httpx.Response(302, headers={"Location": "https://cdn.example/x"}))
    with pytest.raises(ModelHubError) as raised:
        hub.download(3, tmp_path / "model.zip")
    assert raised.value.code == "redirect" and "cdn.example" in raised.value.message
    assert list(tmp_path.iterdir()) == []


def test_download_of_an_assembly_not_ready_says_so(hub, server, tmp_path):
    server.on("GET", "/api/assemblies/3/", {"id": 3, "status": "building", "download_url": None})
    with pytest.raises(ModelHubError) as raised:
        hub.download(3, tmp_path / "model.zip")
    assert raised.value.code == "not_ready" and "building" in raised.value.message


# --- Jobs ------------------------------------------------------------------------------------


def test_train_head_sends_only_the_parameters_given(hub, server):
    server.on("POST", "/api/jobs/", (202, {"id": 8, "kind": "train_head", "status": "queued"}))
    job = hub.train_head(
        team="vision", backbone=2, dataset=5, task="sentiment", head="mlp", epochs=3, early_stopping_patience=2
    )
    assert (job.id, job.kind, job.done) == (8, "train_head", False)
    assert FakeServer.json_of(server.requests[0]) == {
        "team": "vision",
        "kind": "train_head",
        "backbone": 2,
        "dataset": 5,
        "task": "sentiment",
        "head": {"type": "mlp"},
        "epochs": 3,
        "early_stopping": {"patience": 2},
    }


def test_follow_yields_new_log_lines_and_progress_until_the_job_ends(hub, server):
    progress = {"epoch": 0, "epochs": 2, "step": 3, "steps": 10, "eta_s": 4.0}
    server.on(
        "GET",
        "/api/jobs/8/",
        {"id": 8, "status": "queued", "log": "", "progress": {}},
        {"id": 8, "status": "running", "log": "[10:00:00] started\n", "progress": progress},
        {"id": 8, "status": "running", "log": "[10:00:00] started\n", "progress": {**progress, "step": 7}},
        {"id": 8, "status": "running", "log": "[10:00:00] started\n[10:00:01] epoch 1/2: loss=0.5\n"},
        {"id": 8, "status": "succeeded", "log": "[10:00:01] epoch 1/2: loss=0.5\n[10:00:02] epoch 2/2: loss=0.4\n"},
    )
    lines = list(hub.follow(8))
    assert lines == [
        "[10:00:00] started",
        "progress: epoch 1/2, step 7/10, about 4 s left",
        "[10:00:01] epoch 1/2: loss=0.5",
        "[10:00:02] epoch 2/2: loss=0.4",  # the log's front was trimmed: nothing is shown twice
    ]


def test_cancel_posts_to_the_job(hub, server):
    server.on("POST", "/api/jobs/8/cancel/", {"id": 8, "status": "running", "cancel_requested": True})
    assert hub.cancel_job(8).cancel_requested is True


def test_the_package_depends_on_an_http_client_and_a_progress_bar_only():
    import tomllib

    from tests.conftest import REPO_ROOT

    project = tomllib.loads((REPO_ROOT / "client" / "pyproject.toml").read_text())["project"]
    assert (project["name"], project["requires-python"]) == ("modelhub-client", ">=3.10")
    assert sorted(dep.split(">")[0].split("=")[0].split("<")[0] for dep in project["dependencies"]) == ["httpx", "tqdm"]
    assert project["scripts"] == {"modelhub": "modelhub_client.cli:main"}
    assert json.dumps(project).lower().count("tensorflow") == 0
