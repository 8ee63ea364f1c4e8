"""Throttle failed logins per username and per client address, across all web processes.

Covers POST /api/auth/token/ (TokenApi), /login/ and /admin/login/ (the ``login_throttled`` view
wrapper in modelhub/urls.py). Failures are counted by the ``user_login_failed`` signal that
``authenticate()`` sends (teams/signals.py), in Django's cache (settings.CACHES: Redis
or files, shared by every gunicorn worker), in fixed one-minute windows. Once the username's or
the address's count in the current window reaches settings.MODELHUB_LOGIN_FAILURES_PER_MINUTE,
attempts are refused with 429 and Retry-After until the window ends, BEFORE the password is
checked: the right password does not get through either. A successful login resets nothing.

The client address is REMOTE_ADDR. Behind a reverse proxy, REMOTE_ADDR is the proxy's (gunicorn
takes it from the socket, or from the PROXY protocol with --proxy-protocol): list the proxies in
settings.MODELHUB_TRUSTED_PROXIES, and for requests from them the client is the right-most
X-Forwarded-For entry that is not a proxy. X-Forwarded-For from anyone else is ignored, since any
client can send one. If the cache is down, logins are let through (and the error is logged).
"""

import hashlib
import ipaddress
import logging
import math
import time
import unicodedata
from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse

WINDOW_SECONDS = 60
BLOCKED_MESSAGE = (
    "Too many failed logins for this username or from this address (at most {limit} a minute). "
    "Try again in {seconds} seconds."
)

logger = logging.getLogger(__name__)


def now() -> float:
    """Return the wall clock (seconds): windows are shared by processes. Tests move it."""
    return time.time()


def _is_trusted_proxy(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(proxy, strict=False) for proxy in settings.MODELHUB_TRUSTED_PROXIES)


def client_ip(request: HttpRequest | None) -> str:
    """Return the client's address: REMOTE_ADDR, or what a trusted proxy says in X-Forwarded-For."""
    if request is None:
        return ""
    remote = request.META.get("REMOTE_ADDR", "") or ""
    if not _is_trusted_proxy(remote):
        return remote
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    for hop in reversed(hops):  # the right-most entries were added by our proxies, the left ones by anyone
        if _is_trusted_proxy(hop):
            continue
        try:
            return str(ipaddress.ip_address(hop))
        except ValueError:
            return remote  # not an address: count the proxy rather than trust the text
    return remote


def _counter_keys(*, username: str, ip: str, window: int) -> list[str]:
    """Return the cache keys of the username's and the address's failures in `window`."""
    keys = []
    normalized = unicodedata.normalize("NFKC", username or "").strip().casefold()
    if normalized:
        keys.append(f"login-failures:user:{hashlib.sha256(normalized.encode()).hexdigest()}:{window}")
    if ip:
        keys.append(f"login-failures:ip:{ip}:{window}")
    return keys


def _current_window() -> tuple[int, float]:
    """Return (index of the current window, seconds until it ends)."""
    moment = now()
    index = int(moment // WINDOW_SECONDS)
    return index, (index + 1) * WINDOW_SECONDS - moment


def login_failure_record(*, username: str, ip: str) -> None:
    """Count one failed login for `username` and for `ip` in the current window."""
    if settings.MODELHUB_LOGIN_FAILURES_PER_MINUTE <= 0:
        return
    window, _ = _current_window()
    for key in _counter_keys(username=username, ip=ip, window=window):
        try:
            if not cache.add(key, 1, timeout=2 * WINDOW_SECONDS):
                try:
                    cache.incr(key)
                except ValueError:  # expired between add() and incr()
                    cache.set(key, 1, timeout=2 * WINDOW_SECONDS)
        except Exception:
            logger.exception("Could not count a failed login in the cache; the login throttle is not counting.")


def login_retry_after(*, username: str, ip: str) -> int | None:
    """Return the seconds until `username` and `ip` may try again, or None when neither is blocked."""
    limit = settings.MODELHUB_LOGIN_FAILURES_PER_MINUTE
    if limit <= 0:
        return None
    window, remaining = _current_window()
    keys = _counter_keys(username=username, ip=ip, window=window)
    try:
        counts = cache.get_many(keys)
    except Exception:
        logger.exception("Could not read failed-login counters from the cache; letting the attempt through.")
        return None
    if any(int(count) >= limit for count in counts.values()):
        return max(1, math.ceil(remaining))
    return None


def blocked_message(seconds: int) -> str:
    """Return the sentence a refused login attempt gets (it never echoes the username)."""
    return BLOCKED_MESSAGE.format(limit=settings.MODELHUB_LOGIN_FAILURES_PER_MINUTE, seconds=seconds)


def login_throttled(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Wrap a form login view: a POST from a blocked username or address gets a plain-text 429."""
    username_field = get_user_model().USERNAME_FIELD

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.method == "POST":
            seconds = login_retry_after(username=request.POST.get(username_field, ""), ip=client_ip(request))
            if seconds is not None:
                response = HttpResponse(blocked_message(seconds), status=429, content_type="text/plain; charset=utf-8")
                response["Retry-After"] = str(seconds)
                return response
        return view(request, *args, **kwargs)

    return wrapped
