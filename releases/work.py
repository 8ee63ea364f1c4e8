"""Worker side: send one webhook delivery (signed JSON POST) and record the try; queue the next try.

The destination is checked again here, after DNS resolution, and the connection goes to the
address the check approved (see releases.destinations). Redirects are not followed.
"""

import contextlib
import hashlib
import hmac
import http.client
import logging
import socket
import ssl
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.errors import ValidationError
from core.tracked_work import row_finish, run_tracked
from releases.destinations import Destination, destination_check
from releases.models import WebhookDelivery
from releases.services import delivery_retry_create

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
RESPONSE_EXCERPT_BYTES = 1000
USER_AGENT = "ModelHub-Webhooks/1"


def signature(secret: str, body: bytes) -> str:
    """Return the X-ModelHub-Signature header value: sha256=<hex HMAC-SHA256 of the raw body>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def retry_countdown(attempt: int) -> float:
    """Seconds to wait before try `attempt + 1`: base, 4 x base, 16 x base, ..."""
    return settings.MODELHUB_WEBHOOK_RETRY_BASE_SECONDS * 4 ** (attempt - 1)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to a checked address, sending the URL's host name as Host."""

    def __init__(self, host: str, port: int, *, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection to a checked address; the certificate is verified for the host name."""

    def __init__(self, host: str, port: int, *, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def _post(destination: Destination, *, body: bytes, headers: dict[str, str]) -> int:
    """POST `body` to the destination's first address; return the response status.

    MODELHUB_WEBHOOK_TIMEOUT_SECONDS bounds the whole exchange, not each socket read: a receiver
    that answers one byte at a time is cut off at the deadline (the socket is shut down), so a
    slow receiver cannot hold a worker.
    """
    total = settings.MODELHUB_WEBHOOK_TIMEOUT_SECONDS
    connection_class = _PinnedHTTPSConnection if destination.scheme == "https" else _PinnedHTTPConnection
    connection = connection_class(destination.host, destination.port, address=destination.addresses[0], timeout=total)
    expired = threading.Event()

    def cut_off() -> None:
        expired.set()
        if connection.sock is not None:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)

    deadline = threading.Timer(total, cut_off)
    deadline.daemon = True
    deadline.start()
    try:
        connection.request("POST", destination.path, body=body, headers=headers)
        response = connection.getresponse()
        response.read(RESPONSE_EXCERPT_BYTES)
        if expired.is_set():
            raise TimeoutError(f"no complete answer within {total:g} s")
        return response.status
    except (OSError, http.client.HTTPException) as exc:
        if expired.is_set():
            raise TimeoutError(f"no complete answer within {total:g} s") from exc
        raise
    finally:
        deadline.cancel()
        connection.close()


def _transient(status: int) -> bool:
    """Whether another try may succeed: server errors, 408 and 429 (not other client errors)."""
    return status >= 500 or status in (408, 429)


def webhook_deliver(*, delivery_id: int) -> WebhookDelivery | None:
    """Send one try of a delivery and record its outcome; queue the next try when it may help."""
    return run_tracked(WebhookDelivery, delivery_id, _deliver)


def _deliver(delivery: WebhookDelivery) -> None:
    webhook = delivery.webhook
    body = delivery.body.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-ModelHub-Event": delivery.event,
        "X-ModelHub-Delivery": str(delivery.delivery_id),
        "X-ModelHub-Signature": signature(webhook.secret, body),
    }
    started = time.monotonic()
    status_code, error, retry = None, "", False
    try:
        destination = destination_check(webhook.url, allowed_hosts=settings.MODELHUB_WEBHOOK_ALLOWED_HOSTS)
        status_code = _post(destination, body=body, headers=headers)
        if not 200 <= status_code < 300:
            error = f"The receiver answered HTTP {status_code}; expected a 2xx status."
            retry = _transient(status_code)
    except ValidationError as exc:
        error = f"Not sent: {exc.message}"
        retry = exc.code == "destination_unresolvable"  # a resolver hiccup may pass; a refusal will not
    except (OSError, http.client.HTTPException) as exc:
        error = f"Could not deliver to {webhook.url}: {type(exc).__name__}: {exc}".strip()
        retry = True
    duration_ms = round((time.monotonic() - started) * 1000)
    retry = retry and delivery.attempt < MAX_ATTEMPTS and webhook.active
    with transaction.atomic():
        next_try_at = None
        if retry:
            countdown = retry_countdown(delivery.attempt)
            next_try_at = timezone.now() + timedelta(seconds=countdown)
            delivery_retry_create(delivery, countdown=countdown)
        elif error and delivery.attempt >= MAX_ATTEMPTS:
            error += f" Gave up after {MAX_ATTEMPTS} tries."
        row_finish(
            delivery,
            status=WebhookDelivery.Status.FAILED if error else WebhookDelivery.Status.DELIVERED,
            error=error,
            response_status=status_code,
            duration_ms=duration_ms,
            next_try_at=next_try_at,
        )
    logger.info("webhook %s %s try %s: %s", webhook.pk, delivery.event, delivery.attempt, error or status_code)
