"""GET /api/health/: database, broker, storage and whether a worker answered."""

from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from modelhub.core.services import health_report


class HealthApi(APIView):
    """Health check; 200 when every part is up, 503 otherwise.

    Anyone gets ``{"status": "ok" | "degraded"}``; staff and token holders also get each part's
    detail (database, broker, storage, workers), which names paths, addresses and host names.
    """

    permission_classes = [AllowAny]

    @extend_schema(responses={200: dict, 503: dict})
    def get(self, request):
        user = request.user
        details = bool(user and user.is_authenticated and (user.is_staff or request.auth is not None))
        report = health_report(details=details)
        return Response(report, status=200 if report["status"] == "ok" else 503)
