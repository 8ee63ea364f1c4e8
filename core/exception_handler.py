"""One error body shape for the whole API: {"error": {"code", "message", "detail"}}."""

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.errors import ApplicationError


def error_body(code: str, message: str, detail: Any = None) -> dict:
    """Return the error envelope used by every API response that is not a success."""
    return {"error": {"code": code, "message": message, "detail": detail}}


def _first_message(detail: Any) -> str:
    """Flatten a DRF validation detail into one readable sentence."""
    if isinstance(detail, dict):
        parts = []
        for field, value in detail.items():
            text = _first_message(value)
            parts.append(text if field in ("non_field_errors", "detail") else f"{field}: {text}")
        return "; ".join(parts)
    if isinstance(detail, list):
        return " ".join(_first_message(item) for item in detail)
    return str(detail)


DATABASE_DOWN_MESSAGE = (
    "The database is not answering right now, so this request was not served (nothing was changed). "
    "Try again in a few seconds; if it persists, an admin should check the database (manage.py check_services)."
)
DATABASE_RETRY_AFTER_SECONDS = 5


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database connection is gone (not a bad query)."""
    return isinstance(exc, (OperationalError, InterfaceError))


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """Map domain errors and DRF/Django exceptions to the error envelope."""
    if database_unavailable(exc):
        return Response(
            error_body("database_unavailable", DATABASE_DOWN_MESSAGE),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        )
    if isinstance(exc, ApplicationError):
        return Response(error_body(exc.code, exc.message, exc.detail), status=exc.status_code)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "Not found.")
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        code, message, detail = "invalid", _first_message(exc.detail), exc.detail
    elif isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
        code = "not_authenticated"
        message = (
            f"{exc.detail} Send 'Authorization: Token <key>' (POST /api/auth/token/ with "
            "username and password returns a key) or log in to the dashboard."
        )
        detail = None
        response.status_code = status.HTTP_401_UNAUTHORIZED
    else:
        code = getattr(exc, "default_code", "error")
        message = _first_message(getattr(exc, "detail", str(exc)))
        detail = getattr(exc, "envelope_detail", None)  # facts such as a throttle's scope and limit
    response.data = error_body(code, message, detail)
    return response
