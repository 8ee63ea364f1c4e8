"""The HTTP layer under ``Client``: one httpx session with the token, 429 retries, JSON and pages.

Everything that talks to the socket lives here, so that the resource methods (client.py), the
polling (polling.py) and the transfers (transfers.py) never see a status code or a Retry-After.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any, TypeVar

import httpx

from modelhub_client import __version__
from modelhub_client.config import resolve_settings
from modelhub_client.errors import ModelHubError
from modelhub_client.models import ApiObject

logger = logging.getLogger("modelhub_client")

T = TypeVar("T", bound=ApiObject)
S = TypeVar("S", bound="Session")

PAGE_SIZE = 500  # the server's largest page
# Statuses worth retrying while polling: a proxy or the database was briefly away.
TRANSIENT_STATUSES = frozenset({502, 503, 504})
# 429 (a rate limit: settings MODELHUB_THROTTLE_*): every request waits the server's Retry-After and
# tries again, at most this many times, never waiting longer than MAX_RETRY_AFTER seconds at once.
MAX_RATE_LIMIT_RETRIES = 5
MAX_RETRY_AFTER = 300.0


def _id_of(obj: ApiObject | int) -> int:
    return obj if isinstance(obj, int) else obj.id  # type: ignore[attr-defined]


class Session:
    """A ModelHub server reached with an API token: requests, errors, 429 retries, JSON and pages.

    ``Client`` documents the arguments; this class holds the connection they describe.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 60.0,
        progress: bool | None = None,
        transport: httpx.BaseTransport | None = None,
        max_rate_limit_retries: int = MAX_RATE_LIMIT_RETRIES,
    ) -> None:
        settings = resolve_settings(url, token)
        if not settings.url:
            raise ModelHubError(
                "No ModelHub URL: pass Client(url, token), set MODELHUB_URL, or run `modelhub login URL`.",
                code="not_configured",
            )
        self.url = settings.url
        self.token = settings.token
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.max_rate_limit_retries = max_rate_limit_retries
        headers = {"User-Agent": f"modelhub-client/{__version__}", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0)),
            transport=transport,
        )

    def __enter__(self: S) -> S:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # --- HTTP -----------------------------------------------------------------------------

    def request(self, method: str, path: str, *, authenticated: bool = True, **kwargs: Any) -> httpx.Response:
        """Send one request; return the response, or raise ModelHubError for a 4xx/5xx or no answer.

        A 429 (rate limited) is sent again after the server's Retry-After, up to
        ``max_rate_limit_retries`` times; files being uploaded are rewound for each try.
        """
        if authenticated and not self.token:
            raise ModelHubError(
                f"No API token for {self.url}: set MODELHUB_TOKEN or run `modelhub login {self.url}`.",
                code="not_authenticated",
            )
        rewind = _rewinder(kwargs.get("files"))
        for attempt in range(self.max_rate_limit_retries + 1):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise ModelHubError.from_transport(exc, f"{self.url}{path}") from exc
            if response.status_code != 429 or attempt == self.max_rate_limit_retries:
                break
            delay = _retry_after(response, attempt)
            logger.info("%s %s: rate limited (HTTP 429); trying again in %.0f s", method, path, delay)
            response.close()
            time.sleep(delay)
            rewind()
        if response.status_code >= 400:
            raise ModelHubError.from_response(response)
        self._refuse_redirect(method, path, response)
        return response

    def _refuse_redirect(self, method: str, path: str, response: httpx.Response) -> None:
        """Raise on a redirect: following it could send the token elsewhere, or save a redirect page."""
        if response.is_redirect:
            raise ModelHubError(
                f"{method} {self.url}{path} was redirected to {response.headers.get('location')}. Use the "
                "address it ends at as the server URL (often https:// instead of http://).",
                status=response.status_code,
                code="redirect",
            )

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise ModelHubError(
                f"{method} {self.url}{path} answered HTTP {response.status_code} with something that is not JSON "
                f"({response.headers.get('content-type', 'no content type')}). Check that the URL points at ModelHub.",
                status=response.status_code,
                code="invalid_response",
            ) from None

    def _list(self, path: str, model: type[T], params: dict | None = None) -> list[T]:
        """Return every item of a paginated list, page after page."""
        return [model.from_api(item) for item in self._pages(path, params)]

    def _pages(self, path: str, params: dict | None = None) -> list[dict]:
        """Return every item of a paginated list as the server sent it (None parameters left out)."""
        query = {key: value for key, value in (params or {}).items() if value is not None}
        items: list[dict] = []
        page = 1
        while True:
            body = self._json("GET", path, params={**query, "page": page, "page_size": PAGE_SIZE})
            items += body["results"]
            if not body.get("next"):
                return items
            page += 1

    @contextlib.contextmanager
    def _stream_get(self, path: str) -> Iterator[httpx.Response]:
        """Open a streamed GET of ``path``, waiting out 429s as request() does."""
        for attempt in range(self.max_rate_limit_retries + 1):
            try:
                with self._http.stream("GET", path, headers={"Accept": "*/*"}) as response:
                    if response.status_code != 429 or attempt == self.max_rate_limit_retries:
                        yield response
                        return
                    delay = _retry_after(response, attempt)
            except httpx.TransportError as exc:
                raise ModelHubError.from_transport(exc, f"{self.url}{path}") from exc
            logger.info("GET %s: rate limited (HTTP 429); trying again in %.0f s", path, delay)
            time.sleep(delay)


def _retry_after(response: httpx.Response, attempt: int) -> float:
    """Return the seconds to wait after a 429: its Retry-After (seconds or an HTTP date), else 1, 2, 4, ..."""
    value = response.headers.get("retry-after", "").strip()
    seconds: float | None = None
    if value:
        try:
            seconds = float(value)
        except ValueError:
            from email.utils import parsedate_to_datetime

            try:
                seconds = parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError, IndexError, OverflowError):
                seconds = None
    if seconds is None or seconds != seconds:  # missing, unreadable or NaN
        seconds = float(2**attempt)
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _rewinder(files: Any):
    """Return a function that puts every file object of an httpx ``files=`` argument back where it started."""
    streams = []
    values = files.values() if isinstance(files, dict) else [item[1] for item in files or []]
    for value in values:
        stream = value[1] if isinstance(value, tuple) else value  # (filename, stream[, content type]) or stream
        if hasattr(stream, "seek") and hasattr(stream, "tell"):
            streams.append((stream, stream.tell()))

    def rewind() -> None:
        for stream, position in streams:
            stream.seek(position)

    return rewind
