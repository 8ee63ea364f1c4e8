"""Count every request and its latency by route (the URL pattern, not the raw path), method and status.

The route is the pattern Django resolved (``api/assemblies/<int:pk>/predict/``), so ids never
become label values; a path no pattern matches is ``unmatched`` (static files: ``static``), and
methods outside the standard set are ``other``. The middleware sits first, so that the
refusals of the middlewares after it (413, 400) are counted and timed too.
"""

import time

from django.conf import settings

from metrics.instruments import LATENCY, PROCESS_REQUESTS, REQUESTS

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def request_route(request) -> str:
    """Return the URL pattern that served ``request`` ("unmatched" when none did)."""
    match = getattr(request, "resolver_match", None)
    if match is not None and match.route:
        return match.route
    if request.path.startswith("/" + settings.STATIC_URL.lstrip("/")):
        return "static"
    return "unmatched"


class RequestMetricsMiddleware:
    """Observe each request's route, method, status and duration (metrics.instruments)."""

    def __init__(self, get_response):
        self.get_response = get_response
        PROCESS_REQUESTS.set(0)  # this process's series exists from its start

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        labels = (
            request_route(request),
            request.method if request.method in METHODS else "other",
            str(response.status_code),
        )
        REQUESTS.labels(*labels).inc()
        LATENCY.labels(*labels).observe(time.perf_counter() - started)
        PROCESS_REQUESTS.inc()
        return response
