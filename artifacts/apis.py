"""REST endpoints for staged uploads: POST /api/uploads/ and GET /api/uploads/{id}/."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from artifacts.models import Upload
from artifacts.selectors import upload_list
from artifacts.services import upload_create
from core.api import paginated_response
from teams.selectors import membership_get, team_object_get


class UploadOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    team = serializers.CharField(source="team.slug")
    filename = serializers.CharField()
    sha256 = serializers.CharField(source="blob.sha256")
    size_bytes = serializers.IntegerField(source="blob.size_bytes")
    created_by = serializers.CharField(source="created_by.username", default=None, allow_null=True)
    created_at = serializers.DateTimeField()


class UploadCreatedOutputSerializer(UploadOutputSerializer):
    deduplicated = serializers.BooleanField(help_text="True when the team already had these bytes.")


class UploadListCreateApi(APIView):
    """Upload a file into the team's artifact store (deduplicated by sha256)."""

    throttle_scope = "uploads"  # POST counted per user: settings.MODELHUB_THROTTLE_RATES

    parser_classes = [MultiPartParser]

    class InputSerializer(serializers.Serializer):
        team = serializers.CharField()
        file = serializers.FileField()

        class Meta:
            ref_name = "UploadCreate"

    class FilterSerializer(serializers.Serializer):
        team = serializers.CharField(required=False, help_text="A team's slug: only its uploads.")
        sha256 = serializers.RegexField(
            r"^[0-9a-fA-F]{64}$",
            required=False,
            help_text="Only uploads of these bytes (hex sha256): whether the team has a file already.",
        )

    @extend_schema(parameters=[FilterSerializer], responses=UploadOutputSerializer(many=True))
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        uploads = upload_list(user=request.user, filters=filters.validated_data)
        return paginated_response(request, uploads, UploadOutputSerializer, view=self)

    @extend_schema(request=InputSerializer, responses={201: UploadCreatedOutputSerializer})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        team = membership_get(user=request.user, team_slug=data.validated_data["team"]).team
        upload, deduplicated = upload_create(team=team, user=request.user, file=data.validated_data["file"])
        body = dict(UploadOutputSerializer(upload).data, deduplicated=deduplicated)
        return Response(body, status=status.HTTP_201_CREATED)


class UploadDetailApi(APIView):
    @extend_schema(responses=UploadOutputSerializer)
    def get(self, request, pk: int):
        upload = team_object_get(
            Upload.objects.select_related("team", "blob"), user=request.user, pk=pk, label="Upload"
        )
        return Response(UploadOutputSerializer(upload).data)
