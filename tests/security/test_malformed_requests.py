"""Malformed requests get a 4xx with the JSON envelope, never a 500 or an HTML page (issue 20, item 7).

Each case runs on both databases: PostgreSQL (the test database, through Django's test client) and
the embedded default (SQLite, filesystem broker, file cache) as a real gunicorn started by the test,
since SQLite is where an integer beyond 64 bits used to turn into a 500.
"""

import json
import subprocess

import pytest
import requests
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from tests.api.live_app import embedded_env, embedded_member, embedded_setup, live_server

HUGE = 3808107384558099365888  # the issue's: beyond SQLite's and PostgreSQL's 64-bit integers
PASSWORD = "pw-Secret-123"


class Answer:
    def __init__(self, status: int, headers, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def error(self) -> dict:
        assert self.headers.get("Content-Type", "").startswith("application/json"), (self.status, self.body[:300])
        return json.loads(self.body)["error"]


class InProcessApp:
    """The app in this process, on the PostgreSQL test database."""

    database = "postgresql"

    def __init__(self, token: str) -> None:
        self.client = APIClient(HTTP_AUTHORIZATION=f"Token {token}")

    def send(self, method: str, path: str, body: bytes = b"", content_type: str = "application/json") -> Answer:
        response = self.client.generic(method.upper(), path, body, content_type=content_type)
        return Answer(response.status_code, response, response.content)


class LiveApp:
    """The embedded default under gunicorn, over HTTP."""

    database = "sqlite"

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    def send(self, method: str, path: str, body: bytes = b"", content_type: str = "application/json") -> Answer:
        headers = {"Content-Type": content_type} if body else {}
        response = self.session.request(method.upper(), self.url + path, data=body, headers=headers, timeout=60)
        return Answer(response.status_code, response.headers, response.content)


@pytest.fixture(scope="module")
def sqlite_app(tmp_path_factory):
    home = tmp_path_factory.mktemp("embedded")
    env = embedded_env(home / "home", MODELHUB_MAX_REQUEST_BODY_BYTES="1000000")
    embedded_setup(env)
    token = embedded_member(env, "ana", role="admin", password=PASSWORD)
    with live_server(env, home / "gunicorn.log") as url:
        yield url, token


@pytest.fixture(params=["postgresql", "sqlite"])
def app(request, make_member, settings):
    if request.param == "postgresql":
        settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1_000_000
        return InProcessApp(make_member("ana", role="admin", password=PASSWORD)[1])
    url, token = request.getfixturevalue("sqlite_app")
    return LiveApp(url, token)


pytestmark = pytest.mark.django_db


def test_deeply_nested_json_is_a_400(app):
    for body in (b"[" * 200_000, b'{"a":' * 100_000, b"[1," * 100_000):
        answer = app.send("post", "/api/auth/token/", body)
        assert answer.status == 400, (app.database, answer.status, answer.body[:300])
        assert "nested too deeply" in answer.error()["message"]
        answer = app.send("post", "/api/jobs/", body)
        assert answer.status == 400 and answer.error()["code"] == "invalid"


def test_a_json_body_over_the_limit_is_a_413_in_the_envelope(app):
    body = json.dumps({"username": "ana", "password": "x" * 1_100_000}).encode()
    answer = app.send("post", "/api/auth/token/", body)
    assert answer.status == 413, (app.database, answer.status, answer.body[:300])
    error = answer.error()
    assert error["code"] == "payload_too_large" and "MODELHUB_MAX_REQUEST_BODY_BYTES" in error["message"]
    form = app.send(
        "post", "/api/auth/token/", b"username=ana&password=" + b"x" * 1_100_000, "application/x-www-form-urlencoded"
    )
    assert form.status == 413 and form.error()["code"] == "payload_too_large"


def test_a_json_body_under_the_limit_still_works(app):
    answer = app.send("post", "/api/auth/token/", json.dumps({"username": "ana", "password": PASSWORD}).encode())
    assert answer.status == 200, (app.database, answer.body[:300])


def _int_paths() -> list[str]:
    """Every API path with an integer in it, its integers replaced by HUGE."""
    paths = []

    def walk(patterns, prefix: str) -> None:
        for pattern in patterns:
            route = str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, prefix + route)
            elif isinstance(pattern, URLPattern) and "<int:" in route:
                full = prefix + route
                while "<int:" in full:
                    start = full.index("<int:")
                    full = full[:start] + str(HUGE) + full[full.index(">", start) + 1 :]
                paths.append("/" + full.replace("<slug:slug>", "vision"))

    walk(get_resolver().url_patterns, "")
    return sorted(path for path in paths if path.startswith("/api/"))


def test_ids_beyond_64_bits_in_every_path_are_404(app):
    paths = _int_paths()
    assert len(paths) > 30, paths
    for path in paths:
        for method in ("get", "post", "delete"):
            answer = app.send(method, path, b"{}")
            assert answer.status in (404, 405), (app.database, method, path, answer.status, answer.body[:300])
            if answer.status == 404:
                assert answer.error()["code"] == "not_found"
    # The largest id that fits is just not found.
    answer = app.send("get", f"/api/heads/{2**63 - 1}/")
    assert answer.status == 404 and answer.error()["code"] == "not_found"


def test_integers_beyond_64_bits_in_every_filter_are_400(app, client):
    schema = client.get("/api/schema/?format=json").json()
    checked = 0
    for path, operations in schema["paths"].items():
        if "{" in path or "get" not in operations:
            continue
        for parameter in operations["get"].get("parameters", []):
            if parameter["in"] != "query" or parameter["name"] in ("page", "page_size", "format"):
                continue
            for value in (str(HUGE), str(-HUGE)):
                answer = app.send("get", f"{path}?{parameter['name']}={value}")
                assert answer.status in (400, 404), (app.database, path, parameter["name"], answer.status, answer.body)
                assert answer.error()["code"] in ("invalid", "not_found")
            checked += 1
    assert checked > 10
    answer = app.send("get", f"/api/heads/?backbone={HUGE}")
    assert answer.status == 400 and "backbone" in answer.error()["message"]
    assert app.send("get", f"/api/heads/?page={HUGE}").status == 404  # a page past the end


def test_a_number_out_of_range_in_a_body_is_never_a_500(app):
    for path, body in [
        ("/api/assemblies/", {"team": "vision", "backbone": HUGE, "name": "x"}),
        ("/api/imports/", {"team": "vision", "uploads": [HUGE], "backbone_name": "b"}),
        ("/api/jobs/", {"team": "vision", "kind": "train_head", "backbone": HUGE, "dataset": HUGE, "task": "t"}),
        ("/api/aliases/", {"team": "vision", "name": "x", "head_version": HUGE}),
    ]:
        answer = app.send("post", path, json.dumps(body).encode())
        assert answer.status < 500, (app.database, path, answer.status, answer.body[:300])
        if answer.status >= 400:
            assert answer.error()["code"]


def test_request_lines_over_8k_are_refused_by_gunicorn_as_deployed():
    """Dockerfile, docker-compose.yml and make run raise gunicorn's request-line limit to its maximum."""
    from tests.conftest import REPO_ROOT

    for name in ("Dockerfile", "docker-compose.yml", "scripts/run.sh"):
        assert "--limit-request-line" in (REPO_ROOT / name).read_text(), name
    result = subprocess.run(
        ["grep", "-c", "large_client_header_buffers", str(REPO_ROOT / "deploy" / "nginx.conf")],
        capture_output=True,
        text=True,
    )
    assert result.stdout.strip() != "0"
