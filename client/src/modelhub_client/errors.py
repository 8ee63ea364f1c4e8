"""The one exception the client raises: the server's error envelope plus the HTTP status."""

from __future__ import annotations

import json
from typing import Any

import httpx


class ModelHubError(Exception):
    """A call that failed: what the server said (``code``, ``message``, ``detail``) and the HTTP status.

    ``status`` is None when no answer came back (connection refused, timeout) or the client
    stopped by itself (a wait that timed out, a checksum that did not match a download).
    ``body`` is the error body exactly as the server sent it (``{"error": {...}}``), or None.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "error",
        detail: Any = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.detail = detail
        self.body = body

    def __str__(self) -> str:
        where = f"HTTP {self.status}, " if self.status is not None else ""
        return f"{self.message} ({where}{self.code})"

    def envelope(self) -> dict:
        """Return the error as the API shapes it: ``{"error": {"code", "message", "detail"}}``."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return self.body
        return {"error": {"code": self.code, "message": self.message, "detail": self.detail}}

    @classmethod
    def from_response(cls, response: httpx.Response) -> ModelHubError:
        """Build the error from a 4xx/5xx response, in the envelope or not (a proxy's HTML page)."""
        request = response.request
        try:
            body = json.loads(response.read() or b"null")
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and "message" in error:
            return cls(
                str(error.get("message")),
                status=response.status_code,
                code=str(error.get("code") or "error"),
                detail=error.get("detail"),
                body=body,
            )
        text = response.text.strip().replace("\n", " ")[:200]
        return cls(
            f"{request.method} {request.url} answered HTTP {response.status_code} without ModelHub's error body"
            f"{': ' + text if text else ''}. Check that MODELHUB_URL points at ModelHub itself.",
            status=response.status_code,
            code=f"http_{response.status_code}",
            body=body,
        )

    @classmethod
    def from_transport(cls, exc: httpx.TransportError, url: str) -> ModelHubError:
        """Build the error for a request that got no answer at all."""
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
        return cls(
            f"The request to {url} {kind}: {exc or type(exc).__name__}. Check the URL (MODELHUB_URL or "
            "`modelhub login URL`) and that the server is up.",
            code="timeout" if isinstance(exc, httpx.TimeoutException) else "connection_error",
        )
