"""Refuse request bodies over MODELHUB_MAX_UPLOAD_BYTES before reading them."""

from django.conf import settings
from django.http import HttpResponse, JsonResponse

from modelhub.core.exception_handler import error_body


def too_large_message(limit: int, received: int | None) -> str:
    """Return the 413 message: the limit, what was sent, and how to fix it."""
    sent = f"{received:,} bytes" if received is not None else "more than that"
    return (
        f"Upload too large: the limit is {limit:,} bytes (MODELHUB_MAX_UPLOAD_BYTES), "
        f"this request sent {sent}. Upload a smaller file, or ask an admin to raise "
        "MODELHUB_MAX_UPLOAD_BYTES. Nothing was stored."
    )


class UploadLimitMiddleware:
    """Answer 413 when the declared Content-Length is over the upload limit.

    Bodies without a Content-Length are counted while streaming by
    modelhub.artifacts.upload_handlers.LimitedTemporaryFileUploadHandler.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.MODELHUB_MAX_UPLOAD_BYTES
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > limit:
            message = too_large_message(limit, length)
            if request.path.startswith("/api/"):
                response = JsonResponse(error_body("payload_too_large", message), status=413)
            else:
                response = HttpResponse(message, status=413, content_type="text/plain")
            # Clients that send the whole body before reading (Python requests, urllib) would see
            # a broken pipe if we closed now: read and discard a bounded amount of it first.
            # (No Connection header: WSGI applications may not set hop-by-hop headers; the server
            # closes a connection whose body was not read to the end.)
            drain_body(request, min(length, settings.MODELHUB_413_DRAIN_BYTES))
            return response
        return self.get_response(request)


def drain_body(request, num_bytes: int, *, chunk: int = 1024 * 1024) -> int:
    """Read and discard up to ``num_bytes`` of the request body; return how many were read."""
    stream = request.META.get("wsgi.input")
    if stream is None:
        return 0
    read = 0
    try:
        while read < num_bytes:
            data = stream.read(min(chunk, num_bytes - read))
            if not data:
                break
            read += len(data)
    except OSError:  # the client went away
        pass
    return read


class DatabaseUnavailableMiddleware:
    """Answer 503 with Retry-After (never a 500) when a view finds the database gone.

    API views answer through the API exception handler; this covers the dashboard and admin.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        from django.db import connections

        from modelhub.core.exception_handler import (
            DATABASE_DOWN_MESSAGE,
            DATABASE_RETRY_AFTER_SECONDS,
            database_unavailable,
        )

        if not database_unavailable(exception):
            return None
        for connection in connections.all():
            connection.close_if_unusable_or_obsolete()
        if request.path.startswith("/api/"):
            response = JsonResponse(error_body("database_unavailable", DATABASE_DOWN_MESSAGE), status=503)
        else:
            response = HttpResponse(DATABASE_DOWN_MESSAGE, status=503, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
        return response
