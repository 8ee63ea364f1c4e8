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
            # The body was not read; ask the client not to reuse the connection.
            response["Connection"] = "close"
            return response
        return self.get_response(request)
