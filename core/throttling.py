"""Per-user rate limits on the API's expensive operations, counted in Django's cache.

A view opts in with ``throttle_scope = "<scope>"`` (DRF's scoped throttle); the class below is
REST_FRAMEWORK's DEFAULT_THROTTLE_CLASSES. settings.MODELHUB_THROTTLE_RATES maps each scope to a
rate such as "30/min" (environment: MODELHUB_THROTTLE_<SCOPE>), or None for no limit.

- Requests are counted per user, in fixed windows of the rate's period, in the cache shared by
  every gunicorn worker (Redis: atomic add/incr, so concurrent requests in several processes
  cannot all slip through; the embedded default's file cache is close to that). The password
  exchange counts its user's successful exchanges in the view (failed ones are the login
  throttle's, teams/login_throttle.py).
- Only the methods that do the work are counted: unsafe ones (POST, DELETE, ...), plus GET for the
  scopes in COUNTED_READS (compare is a GET). Lists, details and the status polls of the dashboard
  and of the client are never throttled.
- Over the limit: 429, code ``throttled``, with Retry-After (seconds to the window's end) and a
  message naming the scope, the limit and the setting. If the cache is down, requests go through
  (and the error is logged): a rate limit is not worth an outage.
"""

import logging
import math
import time

from django.conf import settings
from django.core.cache import cache
from rest_framework import exceptions, status
from rest_framework.permissions import SAFE_METHODS
from rest_framework.throttling import ScopedRateThrottle

logger = logging.getLogger(__name__)

# Scopes whose GETs are counted too (the GET itself is the expensive work).
COUNTED_READS = frozenset({"compare"})
PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
PERIOD_WORDS = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}


def now() -> float:
    """Return the wall clock (seconds): windows are shared by processes. Tests move it."""
    return time.time()


def parse_rate(rate: str) -> tuple[int, int]:
    """Return (requests, period in seconds) of a rate such as "30/min", "5/s", "1000/day"."""
    count, _, period = rate.partition("/")
    return int(count), PERIOD_SECONDS[period.strip()[0]]


def counted_scope(view, method: str) -> str | None:
    """Return the throttle scope that a ``method`` request to ``view`` counts against, or None."""
    scope = getattr(view, "throttle_scope", None)
    if not scope:
        return None
    if method.upper() in SAFE_METHODS and scope not in COUNTED_READS:
        return None
    return scope


def setting_name(scope: str) -> str:
    """Return the environment variable that tunes ``scope``."""
    return f"MODELHUB_THROTTLE_{scope.upper()}"


class RateLimited(exceptions.Throttled):
    """429 in the error envelope, code ``throttled``; ``wait`` becomes the Retry-After header."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_code = "throttled"

    def __init__(self, *, scope: str, limit: int, period: int, wait: int) -> None:
        every = PERIOD_WORDS.get(period, f"{period} seconds")
        message = (
            f"Too many {scope.replace('_', ' ')} requests: at most {limit} per {every} for each user "
            f"({setting_name(scope)}). This one was not done: try again in {wait} seconds "
            "(the Retry-After header), or ask an admin to raise the limit."
        )
        super().__init__(detail=message)  # (with wait=, DRF appends a sentence of its own)
        self.wait = wait  # DRF's exception handler turns it into the Retry-After header
        self.envelope_detail = {"scope": scope, "limit": limit, "period_seconds": period, "retry_after": wait}


class UserScopedRateThrottle(ScopedRateThrottle):
    """DRF's scoped throttle keyed on the user, with atomic fixed windows and rates read per request.

    Rates come from settings.MODELHUB_THROTTLE_RATES at each request (so override_settings works),
    not from DRF's DEFAULT_THROTTLE_RATES, which DRF reads once at import.
    """

    def get_rate(self) -> str | None:
        return settings.MODELHUB_THROTTLE_RATES.get(self.scope)

    def wait(self) -> None:  # allow_request raises RateLimited with its own wait
        return None

    def get_cache_key(self, request, view) -> str:
        return throttle_key(self.scope, request.user)

    def allow_request(self, request, view) -> bool:
        self.scope = counted_scope(view, request.method)
        if self.scope is not None:
            throttle_count(request, scope=self.scope, user=request.user)
        return True


def throttle_key(scope: str, user) -> str:
    """Return the cache key prefix of ``user``'s requests in ``scope`` (anonymous: none is counted)."""
    return f"throttle:{scope}:user:{user.pk}"


def throttle_count(request, *, scope: str, user) -> None:
    """Count one ``scope`` request of ``user``; raise RateLimited (429) when it is over the limit.

    Views whose user is known only inside the view (the password exchange) call this themselves.
    """
    rate = settings.MODELHUB_THROTTLE_RATES.get(scope)
    if not rate or user is None or not user.is_authenticated:
        return
    limit, period = parse_rate(rate)
    moment = now()
    window = int(moment // period)
    key = f"{throttle_key(scope, user)}:{period}:{window}"
    try:
        if cache.add(key, 1, timeout=period + 1):
            count = 1
        else:
            try:
                count = cache.incr(key)
            except ValueError:  # expired between add() and incr()
                cache.set(key, 1, timeout=period + 1)
                count = 1
    except Exception:
        logger.exception("Could not count a %r request in the cache; the %r throttle is off.", scope, scope)
        return
    if count <= limit:
        return
    wait = max(1, math.ceil((window + 1) * period - moment))
    _discard_body(request)
    raise RateLimited(scope=scope, limit=limit, period=period, wait=wait)


def _discard_body(request, *, chunk: int = 1024 * 1024) -> None:
    """Read and drop a bounded part of an unread body, so that a client still sending it sees the 429.

    (Clients that send the whole body before reading, as httpx and requests do, would otherwise see
    the connection reset by a server that closes with unread bytes.) Django's request stream stops
    at Content-Length, and is empty when the body was read already.
    """
    budget = settings.MODELHUB_413_DRAIN_BYTES
    try:
        while budget > 0:
            data = request._request.read(min(chunk, budget))
            if not data:
                break
            budget -= len(data)
    except OSError:  # the client went away (Django's UnreadablePostError is an OSError)
        pass
