"""GET /api/health/: database, broker, storage and whether a worker answered."""

from drf_spectacular.utils import OpenApiResponse, PolymorphicProxySerializer, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from core.schema import ErrorSerializer
from core.services import health_report


class HealthCheckSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    detail = serializers.JSONField(
        required=False, help_text="When ok: what answered (a name or address; for the worker, a list of names)."
    )
    ms = serializers.FloatField(required=False, help_text="When ok: how long the check took.")
    error = serializers.CharField(required=False, help_text="When not ok: what failed.")


class HealthReportSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "degraded"])
    database = HealthCheckSerializer(required=False, help_text="Staff and token holders only, as the parts below.")
    broker = HealthCheckSerializer(required=False)
    storage = HealthCheckSerializer(required=False)
    worker = HealthCheckSerializer(required=False)


class HealthApi(APIView):
    """Health check; 200 when every part is up, 503 otherwise.

    Anyone gets ``{"status": "ok" | "degraded"}``; staff and token holders also get each part's
    detail (database, broker, storage, workers), which names paths, addresses and host names.
    """

    permission_classes = [AllowAny]

    @extend_schema(
        responses={
            200: HealthReportSerializer,
            503: OpenApiResponse(
                response=PolymorphicProxySerializer(
                    component_name="HealthDegraded",
                    serializers=[HealthReportSerializer, ErrorSerializer],
                    resource_type_field_name=None,
                ),
                description="A part is down: the report says which (status 'degraded').",
            ),
        }
    )
    def get(self, request):
        user = request.user
        details = bool(user and user.is_authenticated and (user.is_staff or request.auth is not None))
        report = health_report(details=details)
        return Response(report, status=200 if report["status"] == "ok" else 503)
