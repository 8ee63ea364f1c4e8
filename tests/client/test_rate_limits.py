"""The client waits out 429s: Retry-After honoured, a bounded number of tries, uploads sent whole again.

Against the mocked API (httpx.MockTransport) for the logic, and against a small real HTTP server on
loopback for what goes over the socket (the upload's bytes, the wait).
"""

import hashlib
import http.server
import json
import threading
import time

import httpx
import pytest
from modelhub_client import Client, Job, ModelHubError

from tests.client.fake_server import TOKEN, URL, FakeServer, envelope

THROTTLED = envelope("throttled", "Too many compare requests: at most 30 per minute for each user.")


def throttled(retry_after: str | None = "7") -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return httpx.Response(429, json=THROTTLED, headers=headers)


@pytest.fixture
def slept(monkeypatch) -> list[float]:
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    return waits


@pytest.fixture
def server():
    return FakeServer()


@pytest.fixture
def hub(server, slept):
    with Client(URL, TOKEN, transport=server.transport(), progress=False) as client:
        yield client


def test_a_429_is_retried_after_its_retry_after(hub, server, slept):
    server.on("GET", "/api/heads/3/", throttled("7"), throttled("2"), {"id": 3, "status": "draft"})
    assert hub.head(3).id == 3
    assert slept == [7.0, 2.0]
    assert len(server.sent("GET", "/api/heads/3/")) == 3


def test_retries_are_bounded_and_then_the_429_is_raised_with_its_envelope(server, slept):
    server.on("POST", "/api/jobs/", throttled("1"))
    with Client(URL, TOKEN, transport=server.transport(), progress=False, max_rate_limit_retries=3) as hub:
        with pytest.raises(ModelHubError) as raised:
            hub.start_job("train_head", team="vision", backbone=1)
    assert raised.value.status == 429 and raised.value.code == "throttled"
    assert "at most 30 per minute" in raised.value.message
    assert len(server.sent("POST", "/api/jobs/")) == 4 and slept == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, [1.0, 2.0, 4.0]), ("soon", [1.0, 2.0, 4.0]), ("100000", [300.0, 300.0, 300.0]), ("-5", [0.0, 0.0, 0.0])],
)
def test_a_missing_or_odd_retry_after_backs_off_within_bounds(server, slept, header, expected):
    server.on("GET", "/api/jobs/1/", throttled(header))
    with Client(URL, TOKEN, transport=server.transport(), progress=False, max_rate_limit_retries=3) as hub:
        with pytest.raises(ModelHubError):
            hub.job(1)
    assert slept == expected


def test_an_http_date_retry_after_is_honoured(hub, server, slept):
    from email.utils import formatdate

    server.on(
        "GET", "/api/jobs/1/", throttled(formatdate(time.time() + 30, usegmt=True)), {"id": 1, "status": "queued"}
    )
    hub.job(1)
    assert len(slept) == 1 and 25 <= slept[0] <= 31


def test_polling_waits_out_a_429(hub, server, slept):
    server.on("GET", "/api/jobs/5/", throttled("3"), {"id": 5, "status": "succeeded"})
    assert hub.wait(Job.from_api({"id": 5, "status": "queued"}), interval=0.5).status == "succeeded"
    assert 3.0 in slept


def test_a_throttled_upload_is_sent_again_whole(hub, server, tmp_path):
    data = b"model bytes " * 10_000
    model = tmp_path / "m.keras"
    model.write_bytes(data)
    created = {"id": 9, "team": "vision", "filename": "m.keras", "sha256": hashlib.sha256(data).hexdigest()}
    server.on("GET", "/api/uploads/", {"count": 0, "next": None, "previous": None, "results": []})
    server.on("POST", "/api/uploads/", throttled("1"), (201, {**created, "size_bytes": len(data)}))
    assert hub.upload(model, team="vision").id == 9
    posts = server.sent("POST", "/api/uploads/")
    assert len(posts) == 2
    assert all(data in request.content for request in posts), "the retried upload did not carry the whole file"


def test_a_throttled_download_is_fetched_again(hub, server, tmp_path):
    data = b"head bytes"
    server.on("GET", "/api/heads/4/", {"id": 4, "status": "approved", "sha256": hashlib.sha256(data).hexdigest(),
                                       "download_url": "/api/heads/4/download/"})  # fmt: skip
    server.on("GET", "/api/heads/4/download/", throttled("2"), httpx.Response(200, content=data))
    from modelhub_client import Head

    target = hub.download(Head.from_api({"id": 4, "status": "approved"}), tmp_path / "h.keras")
    assert target.read_bytes() == data


# --- Over a real socket ---------------------------------------------------------------------------


class _ThrottlingHandler(http.server.BaseHTTPRequestHandler):
    """Answer the first POST /api/uploads/ with 429 Retry-After: 1, the next with 201; record the bodies."""

    bodies: list[bytes] = []
    times: list[float] = []

    def do_GET(self):
        self._json(200, {"count": 0, "next": None, "previous": None, "results": []})

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).bodies.append(body)
        type(self).times.append(time.monotonic())
        if len(type(self).bodies) == 1:
            self._json(429, THROTTLED, headers={"Retry-After": "1"})
        else:
            self._json(201, {"id": 1, "team": "vision", "filename": "m.keras", "size_bytes": 1, "sha256": "x"})

    def _json(self, status: int, body: dict, headers: dict | None = None) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def test_against_a_real_http_server_the_upload_waits_and_is_sent_whole_again(tmp_path):
    _ThrottlingHandler.bodies, _ThrottlingHandler.times = [], []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ThrottlingHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    data = bytes(range(256)) * 4096  # 1 MiB
    model = tmp_path / "m.keras"
    model.write_bytes(data)
    try:
        with Client(f"http://127.0.0.1:{httpd.server_address[1]}", TOKEN, progress=False) as hub:
            assert hub.upload(model, team="vision").id == 1
    finally:
        httpd.shutdown()
        httpd.server_close()
    first, second = _ThrottlingHandler.bodies
    assert data in first and data in second
    assert _ThrottlingHandler.times[1] - _ThrottlingHandler.times[0] >= 0.95  # Retry-After: 1 was honoured
