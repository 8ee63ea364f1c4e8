"""POST /api/uploads/: streamed, deduplicated, size-capped; a cut-off upload stores nothing."""

import hashlib
import os
import socket
import threading
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.signals import request_finished

from artifacts.models import Blob, Upload
from artifacts.stores import get_blob_store
from tests.conftest import wait_until


def stored_blob_count() -> int:
    return len(list(get_blob_store().iter_blobs()))


@pytest.mark.django_db
def test_upload_is_stored_and_deduplicated(api_client_for, tmp_path):
    client = api_client_for("uma")
    data = os.urandom(100_000)
    path = tmp_path / "weights.keras"
    path.write_bytes(data)
    bodies = []
    for _ in range(2):
        with open(path, "rb") as handle:
            response = client.post("/api/uploads/", {"team": "vision", "file": handle}, format="multipart")
        assert response.status_code == 201, response.json()
        bodies.append(response.json())
    assert bodies[0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert bodies[0]["size_bytes"] == len(data)
    assert [b["deduplicated"] for b in bodies] == [False, True]
    assert Blob.objects.count() == 1 and Upload.objects.count() == 2
    assert client.get(f"/api/uploads/{bodies[0]['id']}/").json()["filename"] == "weights.keras"


@pytest.mark.django_db
def test_upload_to_a_team_you_are_not_in_is_404(api_client_for, tmp_path):
    api_client_for("owner", team="vision")
    outsider = api_client_for("mallory", team="audio")
    path = tmp_path / "x.bin"
    path.write_bytes(b"x")
    with open(path, "rb") as handle:
        response = outsider.post("/api/uploads/", {"team": "vision", "file": handle}, format="multipart")
    assert response.status_code == 404
    assert Blob.objects.count() == 0


@pytest.mark.django_db
def test_upload_over_the_limit_gets_413_and_stores_nothing(api_client_for, settings, tmp_path):
    settings.MODELHUB_MAX_UPLOAD_BYTES = 50_000
    blobs_before = stored_blob_count()
    client = api_client_for("uma")
    path = tmp_path / "big.keras"
    path.write_bytes(os.urandom(80_000))
    with open(path, "rb") as handle:
        response = client.post("/api/uploads/", {"team": "vision", "file": handle}, format="multipart")
    assert response.status_code == 413
    message = response.json()["error"]["message"]
    assert "50,000 bytes" in message and "MODELHUB_MAX_UPLOAD_BYTES" in message
    assert Blob.objects.count() == 0 and Upload.objects.count() == 0
    assert stored_blob_count() == blobs_before


def test_streaming_limit_stops_a_body_without_content_length(settings):
    """Bodies with no declared length are counted chunk by chunk by the upload handler."""
    from artifacts.upload_handlers import LimitedTemporaryFileUploadHandler
    from core.errors import PayloadTooLargeError

    settings.MODELHUB_MAX_UPLOAD_BYTES = 100
    handler = LimitedTemporaryFileUploadHandler()
    handler.handle_raw_input(None, {}, None, b"x")
    handler.new_file("file", "a.bin", "application/octet-stream", None)
    handler.receive_data_chunk(b"a" * 60, 0)
    temp_path = handler.file.temporary_file_path()
    with pytest.raises(PayloadTooLargeError):
        handler.receive_data_chunk(b"a" * 60, 60)
    assert not Path(temp_path).exists()


def _send_half_an_upload(host: str, port: int, token: str, boundary: str, body: bytes) -> None:
    """POST half of ``body`` as an upload, close the sending side, read the answer to its end."""
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(
            (
                f"POST /api/uploads/ HTTP/1.1\r\nHost: {host}\r\nAuthorization: Token {token}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
        )
        sock.sendall(body[: len(body) // 2])  # the client dies halfway through
        sock.shutdown(socket.SHUT_WR)
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass  # a reset is an answer too: the server gave up on the request


@pytest.mark.django_db(transaction=True)
def test_upload_cut_off_halfway_leaves_no_row_and_no_blob(live_server, make_member):
    _, token = make_member("uma")
    blobs_before = stored_blob_count()
    boundary = "----modelhubboundary"
    payload = os.urandom(400_000)
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="team"\r\n\r\nvision\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="m.keras"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    body = head + payload + tail
    host, port = live_server.url.removeprefix("http://").split(":")
    # The live server runs in this process: its request_finished signal says that the cut-off
    # request, its upload handler's cleanup included, is over before "nothing stored" is asserted.
    finished = threading.Event()

    def on_finished(**kwargs):
        finished.set()

    request_finished.connect(on_finished, weak=False)
    try:
        _send_half_an_upload(host, int(port), token, boundary, body)
        wait_until(finished.is_set, timeout=30, message="the server to finish the cut-off upload request")
    finally:
        request_finished.disconnect(on_finished)
    assert Upload.objects.count() == 0
    assert Blob.objects.count() == 0
    assert stored_blob_count() == blobs_before
    leftovers = [p for p in Path(django_settings.FILE_UPLOAD_TEMP_DIR).glob("*.upload")]
    assert leftovers == []
