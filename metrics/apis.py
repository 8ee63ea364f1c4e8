"""GET /metrics: the Prometheus text exposition of the web process's counters and the scrape-time reads.

Staff (and superusers) can read it with a token or a session; members get 403 and anonymous
callers 401, in the API's error envelope. ``MODELHUB_METRICS_PUBLIC=1`` opens it to anyone, for a
scraper on a private network. Under gunicorn the samples of every worker process are added up
(prometheus-client's multiprocess mode); metrics.collectors adds the database and broker reads.
"""

import os

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from rest_framework import exceptions
from rest_framework.permissions import AllowAny, BasePermission
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.views import APIView

from core.schema import error_response
from metrics.collectors import ModelHubCollector


class IsStaff(BasePermission):
    """Staff and superusers; a member is refused with 403, an anonymous caller with 401."""

    message = (
        "Only staff can read /metrics: ask an admin for a staff account's token, or set MODELHUB_METRICS_PUBLIC=1 "
        "where the scraper sits on a private network."
    )

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            raise exceptions.NotAuthenticated(
                "Authentication needed: send 'Authorization: Token <key>' of a staff account (Prometheus: "
                "authorization: {type: Token, credentials: <key>} in the scrape config)."
            )
        return bool(user.is_staff or user.is_superuser)


class PrometheusTextRenderer(BaseRenderer):
    """Lets a scraper ask for text/plain; the view answers with the exposition itself."""

    media_type = "text/plain"
    format = "prometheus"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data if isinstance(data, bytes) else str(data).encode()


class _DefaultRegistry:
    """The process's own registry (single-process mode) as one collector of a scrape registry."""

    def collect(self):
        yield from REGISTRY.collect()


def metrics_registry() -> CollectorRegistry:
    """Return a registry for one scrape: every worker's samples (or this process's), plus the reads."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_DefaultRegistry())
    registry.register(ModelHubCollector())
    return registry


class MetricsApi(APIView):
    """GET /metrics: Prometheus text format (version 0.0.4)."""

    renderer_classes = [PrometheusTextRenderer, JSONRenderer]

    def get_permissions(self):
        return [AllowAny()] if settings.MODELHUB_METRICS_PUBLIC else [IsStaff()]

    def handle_exception(self, exc):
        # Errors are JSON (the API's envelope) even when a scraper asked for text/plain.
        response = super().handle_exception(exc)
        answer = JsonResponse(response.data, status=response.status_code)
        for header in ("Retry-After", "WWW-Authenticate"):
            if header in response:
                answer[header] = response[header]
        return answer

    @extend_schema(
        responses={
            (200, "text/plain"): OpenApiResponse(str, description="The Prometheus text exposition format 0.0.4."),
            403: error_response("Not staff: only staff can read /metrics (unless MODELHUB_METRICS_PUBLIC=1)."),
        },
    )
    def get(self, request):
        return HttpResponse(generate_latest(metrics_registry()), content_type=CONTENT_TYPE_PLAIN_0_0_4)
