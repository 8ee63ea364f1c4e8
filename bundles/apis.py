"""Download the TF Serving models.config of the bundle: GET /api/bundles/tfserving/models.config?team=<slug>."""

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.views import APIView

from bundles.config import model_server_config
from bundles.selectors import bundle_models
from core.schema import error_response
from teams.selectors import membership_get


class TfServingConfigApi(APIView):
    """The ModelServerConfig text of one team's backbones (the worker writes the same into the bundle)."""

    @extend_schema(
        tags=["bundles"],
        summary="Download the team's TF Serving models.config",
        parameters=[OpenApiParameter("team", str, OpenApiParameter.QUERY, required=True, description="A team's slug.")],
        responses={
            (200, "text/plain"): OpenApiResponse(OpenApiTypes.STR, description="ModelServerConfig, text format."),
            404: error_response("Not a team of yours."),
        },
    )
    def get(self, request):
        team = membership_get(user=request.user, team_slug=request.query_params.get("team", "")).team
        base_path = settings.MODELHUB_TFSERVING_BASE_PATH or str(settings.MODELHUB_BUNDLE_ROOT / "tfserving")
        text = model_server_config(bundle_models(team_ids=[team.pk]), base_path=base_path)
        response = HttpResponse(text, content_type="text/plain; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="models.config"'
        return response
