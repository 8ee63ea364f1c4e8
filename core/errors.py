"""Domain errors. Services raise these; ONE exception handler maps them to HTTP.

Messages say what happened, what was expected and how to fix it.
"""

from typing import Any


class ApplicationError(Exception):
    """A request that cannot be honoured, with an HTTP status, a code and a message."""

    status_code = 400
    code = "invalid"

    def __init__(self, message: str, *, detail: Any = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        if code is not None:
            self.code = code


class ValidationError(ApplicationError):
    status_code = 400
    code = "invalid"


class NotFoundError(ApplicationError):
    status_code = 404
    code = "not_found"


class PermissionDeniedError(ApplicationError):
    status_code = 403
    code = "permission_denied"


class ConflictError(ApplicationError):
    status_code = 409
    code = "conflict"


class PayloadTooLargeError(ApplicationError):
    status_code = 413
    code = "payload_too_large"
