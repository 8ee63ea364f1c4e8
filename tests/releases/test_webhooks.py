"""Webhooks through the HTTP API with a real worker and a real local HTTP receiver: signatures,
retries with backoff, the delivery log, and the destination rules (against SSRF)."""

import ipaddress
import socket

import pytest

from tests.conftest import wait_until
from tests.releases.conftest import verified

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "a-long-random-shared-secret"


def _create(client, url: str, *, events=("alias.moved",), secret: str = SECRET):
    return client.post(
        "/api/webhooks/", {"team": "vision", "url": url, "events": list(events), "secret": secret}, format="json"
    )


def _deliveries(client, webhook_id: int, count: int) -> list[dict]:
    """Wait until the webhook has `count` tries, all finished; return them, newest first."""

    def finished():
        rows = client.get(f"/api/webhooks/{webhook_id}/deliveries/").json()["results"]
        done = len(rows) >= count and all(row["status"] in ("delivered", "failed") for row in rows)
        return rows if done else None

    return wait_until(finished, timeout=60, interval=0.2, message=f"{count} finished deliveries")


def test_test_event_is_signed_and_logged(api_client_for, webhook_settings, webhook_worker, receiver):
    rita = api_client_for("rita", role="reviewer")
    created = _create(rita, receiver.url)
    assert created.status_code == 201, created.json()
    webhook = created.json()
    assert webhook["secret"] == SECRET and webhook["secret_hint"] == "...cret"
    assert "secret" not in rita.get(f"/api/webhooks/{webhook['id']}/").json()
    listed = rita.get("/api/webhooks/?team=vision").json()["results"]
    assert [row["id"] for row in listed] == [webhook["id"]]
    assert all("secret" not in row for row in listed)

    sent = rita.post(f"/api/webhooks/{webhook['id']}/test/")
    assert sent.status_code == 202, sent.json()
    rows = _deliveries(rita, webhook["id"], 1)
    assert [(row["status"], row["response_status"], row["attempt"]) for row in rows] == [("delivered", 200, 1)]
    assert rows[0]["duration_ms"] is not None and rows[0]["error"] == ""

    [request] = receiver.requests
    assert request["path"] == "/hook"
    body = verified(request, SECRET)
    assert body["event"] == "webhook.test" and body["team"] == "vision" and body["data"]["webhook"] == webhook["id"]
    assert {"event", "team", "created_at", "data"} <= set(body)
    assert request["headers"]["X-ModelHub-Event"] == "webhook.test"
    assert request["headers"]["X-ModelHub-Delivery"] == rows[0]["delivery_id"]
    assert request["headers"]["Content-Type"] == "application/json"
    # Another secret does not verify: the signature covers the raw body with this secret.
    with pytest.raises(AssertionError, match="bad signature"):
        verified(request, "another-secret-of-16+")


def test_failed_tries_are_retried_with_the_same_delivery_id(api_client_for, webhook_settings, webhook_worker, receiver):
    rita = api_client_for("rita", role="reviewer")
    webhook = _create(rita, receiver.url).json()
    receiver.statuses = [500, 500, 200]
    rita.post(f"/api/webhooks/{webhook['id']}/test/")
    rows = wait_until(
        lambda: (
            (body := rita.get(f"/api/webhooks/{webhook['id']}/deliveries/").json()["results"])
            and body[0]["status"] == "delivered"
            and body
        ),
        timeout=60,
        message="the third try to be delivered",
    )
    oldest_first = list(reversed(rows))
    assert [(row["attempt"], row["status"], row["response_status"]) for row in oldest_first] == [
        (1, "failed", 500),
        (2, "failed", 500),
        (3, "delivered", 200),
    ]
    assert "HTTP 500" in oldest_first[0]["error"] and oldest_first[0]["next_try_at"] is not None
    assert len({row["delivery_id"] for row in rows}) == 1
    assert len(receiver.requests) == 3
    assert len({request["headers"]["X-ModelHub-Delivery"] for request in receiver.requests}) == 1
    assert len({request["body"] for request in receiver.requests}) == 1  # the same signed bytes every try


def test_delivery_gives_up_after_five_tries(api_client_for, webhook_settings, webhook_worker, receiver):
    rita = api_client_for("rita", role="reviewer")
    webhook = _create(rita, receiver.url).json()
    receiver.statuses = [503] * 10
    rita.post(f"/api/webhooks/{webhook['id']}/test/")
    rows = wait_until(
        lambda: (
            (body := rita.get(f"/api/webhooks/{webhook['id']}/deliveries/").json()["results"])
            and body[0]["attempt"] == 5
            and body[0]["status"] == "failed"
            and body
        ),
        timeout=60,
        message="the fifth try to fail",
    )
    assert len(rows) == 5 and len(receiver.requests) == 5
    assert "Gave up after 5 tries" in rows[0]["error"] and rows[0]["next_try_at"] is None


def test_a_client_error_is_not_retried(api_client_for, webhook_settings, webhook_worker, receiver):
    rita = api_client_for("rita", role="reviewer")
    webhook = _create(rita, receiver.url).json()
    receiver.statuses = [401]
    rita.post(f"/api/webhooks/{webhook['id']}/test/")
    rows = _deliveries(rita, webhook["id"], 1)
    assert [(row["status"], row["response_status"]) for row in rows] == [("failed", 401)]
    assert rows[0]["next_try_at"] is None


def test_only_reviewers_and_admins_manage_webhooks(api_client_for, webhook_settings, receiver):
    member = api_client_for("mo", role="member")
    assert _create(member, receiver.url).status_code == 403
    assert member.get("/api/webhooks/?team=vision").status_code == 403
    outsider = api_client_for("olga", team="audio", role="admin")
    rita = api_client_for("rita", role="reviewer")
    webhook = _create(rita, receiver.url).json()
    assert outsider.get(f"/api/webhooks/{webhook['id']}/").status_code == 404
    assert outsider.post(f"/api/webhooks/{webhook['id']}/test/").status_code == 404
    assert member.delete(f"/api/webhooks/{webhook['id']}/").status_code == 403
    assert rita.delete(f"/api/webhooks/{webhook['id']}/").status_code == 204
    assert rita.get(f"/api/webhooks/{webhook['id']}/").status_code == 404


def test_bad_events_and_short_secrets_are_refused(api_client_for, webhook_settings, receiver):
    rita = api_client_for("rita", role="reviewer")
    response = _create(rita, receiver.url, events=["alias.renamed"])
    assert response.status_code == 400 and "events" in response.json()["error"]["detail"]
    response = _create(rita, receiver.url, secret="short")
    assert response.status_code == 400 and "16" in response.json()["error"]["message"]
    generated = rita.post(
        "/api/webhooks/", {"team": "vision", "url": receiver.url, "events": ["job.finished"]}, format="json"
    )
    assert generated.status_code == 201 and len(generated.json()["secret"]) >= 32


# --- Destination rules ----------------------------------------------------------------------


def test_loopback_is_refused_by_default_with_a_clear_error(api_client_for, settings, receiver):
    from releases.models import Webhook

    settings.MODELHUB_WEBHOOK_ALLOWED_HOSTS = []
    rita = api_client_for("rita", role="reviewer")
    response = _create(rita, receiver.url)
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["code"] == "destination_not_allowed"
    assert "127.0.0.1" in error["message"] and "loopback" in error["message"]
    assert "MODELHUB_WEBHOOK_ALLOWED_HOSTS" in error["message"]
    assert not Webhook.objects.exists()


@pytest.mark.parametrize("allowed", [["127.0.0.1"], ["127.0.0.0/8"]])
def test_allowed_hosts_let_an_inside_receiver_in(api_client_for, settings, receiver, allowed):
    settings.MODELHUB_WEBHOOK_ALLOWED_HOSTS = allowed
    rita = api_client_for("rita", role="reviewer")
    assert _create(rita, receiver.url).status_code == 201


def test_a_host_name_resolving_to_a_private_address_is_refused(api_client_for, settings, monkeypatch):
    settings.MODELHUB_WEBHOOK_ALLOWED_HOSTS = []
    real = socket.getaddrinfo

    def resolve(host, port, *args, **kwargs):
        if host == "intranet.example.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    rita = api_client_for("rita", role="reviewer")
    response = _create(rita, "https://intranet.example.test/hook")
    assert response.status_code == 400
    assert "10.1.2.3" in response.json()["error"]["message"] and "private" in response.json()["error"]["message"]
    # 'localhost' resolves (for real) to a loopback address.
    response = _create(rita, "http://localhost:8080/hook")
    assert response.status_code == 400 and "loopback" in response.json()["error"]["message"]
    # The host name itself may be allowed.
    settings.MODELHUB_WEBHOOK_ALLOWED_HOSTS = ["intranet.example.test"]
    assert _create(rita, "https://intranet.example.test/hook").status_code == 201


def test_delivery_checks_the_destination_again(api_client_for, settings, receiver):
    """A destination allowed when registered but not when delivering is refused by the worker, without retries."""
    from releases.models import WebhookDelivery
    from releases.work import webhook_deliver

    settings.MODELHUB_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.MODELHUB_WEBHOOK_QUEUE = "nobody-consumes-this"
    rita = api_client_for("rita", role="reviewer")
    webhook = _create(rita, receiver.url).json()
    delivery = rita.post(f"/api/webhooks/{webhook['id']}/test/").json()
    settings.MODELHUB_WEBHOOK_ALLOWED_HOSTS = []
    webhook_deliver(delivery_id=delivery["id"])  # what the worker runs
    row = WebhookDelivery.objects.get(pk=delivery["id"])
    assert row.status == "failed" and row.error.startswith("Not sent:") and "loopback" in row.error
    assert row.next_try_at is None and WebhookDelivery.objects.count() == 1
    assert receiver.requests == []


@pytest.mark.parametrize(
    "address, reason",
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("0.0.0.0", "unspecified"),
        ("::ffff:10.0.0.1", "private"),
        ("2002:7f00:1::", "loopback"),  # 6to4 around 127.0.0.1
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),  # Teredo, client 127.0.0.1
        ("fec0::1", "site-local"),
        ("64:ff9b::a00:1", "NAT64 (an embedded IPv4 address)"),
        ("100.64.0.1", "non-public"),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_address_rules(address, reason):
    from releases.destinations import _why_refused

    assert _why_refused(ipaddress.ip_address(address)) == reason


def test_a_receiver_that_answers_a_byte_at_a_time_is_cut_off_at_the_deadline(settings):
    """The timeout bounds the whole exchange: headers dribbled every 0.3 s cannot hold the worker."""
    import socket
    import threading
    import time

    from releases.destinations import Destination
    from releases.work import _post

    settings.MODELHUB_WEBHOOK_TIMEOUT_SECONDS = 1.0
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    stop = threading.Event()

    def dribble():
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\n")
            while not stop.is_set():
                try:
                    connection.sendall(b"X: a\r\n")
                except OSError:
                    return
                time.sleep(0.3)

    thread = threading.Thread(target=dribble, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    destination = Destination(scheme="http", host="127.0.0.1", port=port, path="/", addresses=("127.0.0.1",))
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError, match="no complete answer within 1 s"):
            _post(destination, body=b"{}", headers={"Content-Type": "application/json"})
    finally:
        stop.set()
        listener.close()
    # Cut off, not read for ever: the receiver would dribble until stopped. A deadline sized for a
    # busy machine (the delivery's own limit is 1 s).
    assert time.monotonic() - started < 30
