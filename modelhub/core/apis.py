"""GET /api/health/: database, broker, storage and whether a worker answered."""

from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from modelhub.core.services import health_report


class HealthApi(APIView):
    """Public health check; 200 when every part is up, 503 otherwise (with the reasons)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(responses={200: dict, 503: dict})
    def get(self, request):
        report = health_report()
        return Response(report, status=200 if report["status"] == "ok" else 503)
