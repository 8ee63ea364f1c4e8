"""Fixtures of the release tests: a local HTTP receiver and a worker for webhook deliveries.

The webhook worker consumes a queue of its own (MODELHUB_WEBHOOK_QUEUE), with 127.0.0.1 allowed
as a destination and short retry waits, so that the session's shared worker (which does not
allow loopback destinations) never takes a delivery.
"""

import hashlib
import hmac
import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import running_worker

WEBHOOK_QUEUE = f"webhooks-test-{os.getpid()}"
RETRY_BASE_SECONDS = "0.05"


class Receiver:
    """A real HTTP server on 127.0.0.1 that records each POST and answers the statuses it is given."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                code = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def verified(request: dict, secret: str) -> dict:
    """Check the request's X-ModelHub-Signature as a receiver would (README example); return the JSON body."""
    expected = "sha256=" + hmac.new(secret.encode(), request["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, request["headers"]["X-ModelHub-Signature"]), "bad signature"
    return json.loads(request["body"])


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def webhook_settings(settings):
    """The test process sends deliveries to the webhook worker's queue and may register 127.0.0.1."""
    settings.MODELHUB_WEBHOOK_QUEUE = WEBHOOK_QUEUE
    settings.MODELHUB_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    return settings


@pytest.fixture(scope="session")
def webhook_worker(django_db_setup, django_db_blocker, tmp_path_factory):
    """A worker consuming only the webhook queue, allowed to deliver to 127.0.0.1."""
    name = f"webhookworker-{os.getpid()}@{socket.gethostname()}"
    env = {
        "MODELHUB_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        "MODELHUB_WEBHOOK_RETRY_BASE_SECONDS": RETRY_BASE_SECONDS,
        "MODELHUB_WEBHOOK_TIMEOUT_SECONDS": "3",
        "MODELHUB_WEBHOOK_QUEUE": WEBHOOK_QUEUE,
    }
    log = tmp_path_factory.mktemp("webhook-worker") / "worker.log"
    with running_worker(log, name=name, queues=WEBHOOK_QUEUE, env=env) as process:
        yield process
