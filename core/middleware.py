"""Refuse oversized and malformed requests before a view reads them: 4xx answers, never a 500."""

import json
import logging
import re

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpResponse, JsonResponse

from core.exception_handler import error_body

logger = logging.getLogger(__name__)


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
    artifacts.upload_handlers.LimitedTemporaryFileUploadHandler.
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
            elif is_protocol_path(request.path):
                response = JsonResponse({"error": message}, status=413)
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

        from core.exception_handler import (
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
        elif is_protocol_path(request.path):
            response = JsonResponse({"error": DATABASE_DOWN_MESSAGE}, status=503)
        else:
            response = HttpResponse(DATABASE_DOWN_MESSAGE, status=503, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
        return response


# The largest id any table has (a signed 64-bit BigAutoField); SQLite cannot even bind a larger int.
MAX_ID = 2**63 - 1
INTEGER = re.compile(r"^[+-]?[0-9]{19,4300}$")  # shorter ones are in range; int() refuses longer ones
PAGINATION_PARAMETERS = frozenset({"page", "page_size"})
JSON_CONTENT_TYPES = ("application/json",)


# The inference protocols (OIP v2 under /v2, TF Serving's REST shape under /v1): their errors are
# {"error": "..."} (issue 24), and their JSON bodies are never deeper than this (a tensor of 8
# dimensions inside a request is about 12 levels).
PROTOCOL_PREFIXES = ("/v1/", "/v2/")
PROTOCOL_MAX_JSON_DEPTH = 32


def is_protocol_path(path: str) -> bool:
    """Whether `path` is one of the inference protocols' (/v1/..., /v2 and /v2/...)."""
    return path == "/v2" or path.startswith(PROTOCOL_PREFIXES)


def _refusal(request, status: int, code: str, message: str):
    """Return the refusal: the JSON envelope under /api/, {"error": message} for the protocols, else plain text."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body(code, message), status=status)
    if is_protocol_path(request.path):
        return JsonResponse({"error": message}, status=status)
    return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")


def body_too_large_message(limit: int, received: int | None) -> str:
    """Return the 413 message for a non-file body over DATA_UPLOAD_MAX_MEMORY_SIZE."""
    sent = f"{received:,} bytes" if received is not None else "more than that"
    return (
        f"Request body too large: a body that is not a file upload (JSON, form fields) may hold at most "
        f"{limit:,} bytes (MODELHUB_MAX_REQUEST_BODY_BYTES), this request sent {sent}. Send files as "
        "multipart uploads (POST /api/uploads/), or send less data per request. Nothing was done."
    )


class MalformedRequestMiddleware:
    """Answer malformed requests with a 4xx (the JSON envelope under /api/, {"error": ...} under /v1/ and /v2/),
    never a 500 or an HTML page.

    - a JSON or form body over DATA_UPLOAD_MAX_MEMORY_SIZE: 413 before it is read (multipart
      uploads have their own limit, UploadLimitMiddleware);
    - a JSON body nested deeper than Python's parser can follow (``[`` x 200,000): 400; under the
      inference protocols (/v1/, /v2/) any body nested deeper than PROTOCOL_MAX_JSON_DEPTH: 400;
    - an integer in the query string beyond what a table can hold (?backbone=10**22): 400, on
      SQLite (which cannot bind it) as on PostgreSQL (page numbers excepted: past the end is 404);
    - an id in the path beyond what a table can hold: 404, as for any id that does not exist;
    - what Django raises on a malformed body or an integer too large for the database (SQLite
      refuses to bind one; a filter such as ?backbone=10**22): 413 or 400.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        refusal = self._refuse_query(request) or self._refuse_body(request)
        if refusal is not None:
            return refusal
        return self.get_response(request)

    def _refuse_query(self, request):
        """Refuse an integer in the query string beyond any id (e.g. ?backbone=10**22): 400, on every database."""
        if not request.path.startswith("/api/"):
            return None
        for name, values in request.GET.lists():
            if name in PAGINATION_PARAMETERS:  # the paginator answers a page past the end with 404
                continue
            for value in values:
                if INTEGER.match(value) and abs(int(value)) > MAX_ID:
                    return _refusal(
                        request,
                        400,
                        "invalid",
                        f"{name}: {value[:40]}{'...' if len(value) > 40 else ''} is out of range: ids and numbers "
                        f"in the query string are at most {MAX_ID}. Use an id from a list.",
                    )
        return None

    def _refuse_body(self, request):
        content_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if content_type.startswith("multipart/"):
            return None
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return _refusal(request, 400, "invalid", "The Content-Length header is not a number.")
        if limit is not None and length > limit:
            drain_body(request, min(length, settings.MODELHUB_413_DRAIN_BYTES))
            return _refusal(request, 413, "payload_too_large", body_too_large_message(limit, length))
        if length and is_protocol_path(request.path):
            return self._refuse_deep_protocol_body(request)
        if length and content_type in JSON_CONTENT_TYPES and request.path.startswith("/api/"):
            try:
                json.loads(request.body)
            except RecursionError:
                return _refusal(
                    request,
                    400,
                    "invalid",
                    "JSON parse error: the body is nested too deeply to be read (a few hundred levels at most). "
                    "Send a flatter document.",
                )
            except (ValueError, RequestDataTooBig):  # DRF's parser says what is wrong with it
                pass
        return None

    def _refuse_deep_protocol_body(self, request):
        """Refuse a protocol body (its JSON part, with the binary tensor extension) nested too deeply: 400.

        Whatever its Content-Type (tritonclient sends none): the depth is counted without parsing
        (core.json_bounded, linear, no recursion), so no parser or view of the protocols ever
        recurses over a hostile nesting.
        """
        from core.json_bounded import json_nesting_depth

        body = request.body
        try:
            head_length = int(request.headers.get("Inference-Header-Content-Length") or len(body))
        except ValueError:
            head_length = len(body)  # the OIP view answers the malformed header itself
        depth = json_nesting_depth(body[: max(0, head_length)])
        if depth > PROTOCOL_MAX_JSON_DEPTH:
            return _refusal(
                request,
                400,
                "invalid",
                f"JSON parse error: the body is nested {depth} levels deep; inference requests are at most "
                f"{PROTOCOL_MAX_JSON_DEPTH} levels deep. Send tensors as flat or row-nested lists.",
            )
        return None

    def process_view(self, request, view_func, view_args, view_kwargs):
        for name, value in view_kwargs.items():
            if isinstance(value, int) and not 0 <= value <= MAX_ID:
                return _refusal(
                    request,
                    404,
                    "not_found",
                    f"Not found: {name} {value} is larger than any id (at most {MAX_ID}). Use an id from a list.",
                )
        return None

    def process_exception(self, request, exception):
        return refusal_for_exception(request, exception)


def refusal_for_exception(request, exception):
    """Return the 4xx answer for an exception that a malformed request causes, or None."""
    if isinstance(exception, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0) or None
        except ValueError:
            length = None
        return _refusal(request, 413, "payload_too_large", body_too_large_message(limit, length))
    if isinstance(exception, (TooManyFieldsSent, TooManyFilesSent)):
        return _refusal(request, 400, "invalid", f"{exception} Send fewer fields or files per request.")
    if isinstance(exception, OverflowError):
        logger.warning("Refused a request with a number out of range: %s", exception)
        return _refusal(
            request,
            400,
            "invalid",
            f"A number in this request is out of range: ids and counts are at most {MAX_ID}. "
            "Check the ids and filters you sent.",
        )
    return None
