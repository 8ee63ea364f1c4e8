"""REST endpoints for backbone versions: upload, list, detail, download."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from artifacts.downloads import blob_download_response
from backbones.models import BackboneVersion
from backbones.selectors import backbone_get, backbone_list
from backbones.services import backbone_upload
from core.api import TRACKED_WORK_FIELDS, paginated_response
from core.schema import error_response
from teams.selectors import membership_get


class BackboneOutputSerializer(serializers.ModelSerializer):
    team = serializers.CharField(source="team.slug")
    sha256 = serializers.CharField(source="blob.sha256")
    size_bytes = serializers.IntegerField(source="blob.size_bytes")
    created_by = serializers.CharField(source="created_by.username", default=None, allow_null=True)
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = BackboneVersion
        fields = [
            "id",
            "team",
            "name",
            "version",
            "status",
            "error",
            "sha256",
            "size_bytes",
            "filename",
            "description",
            "feature_layer",
            "weights_sha256",
            "spec",
            "parent",
            "duplicate_of",
            "origin",
            "created_by",
            "created_at",
            *TRACKED_WORK_FIELDS,
            "download_url",
        ]

    def get_download_url(self, obj) -> str:
        return f"/api/backbones/{obj.pk}/download/"


class BackboneUploadedOutputSerializer(BackboneOutputSerializer):
    deduplicated = serializers.BooleanField(
        help_text="True (status 200) when these bytes are already this version; false (202) for a new version."
    )

    class Meta(BackboneOutputSerializer.Meta):
        fields = [*BackboneOutputSerializer.Meta.fields, "deduplicated"]


class BackboneListCreateApi(APIView):
    throttle_scope = "uploads"  # POST counted per user: settings.MODELHUB_THROTTLE_RATES
    parser_classes = [MultiPartParser]

    class InputSerializer(serializers.Serializer):
        team = serializers.CharField()
        name = serializers.CharField(max_length=100)
        file = serializers.FileField()
        feature_layer = serializers.CharField(required=False, allow_blank=True, default="")
        description = serializers.CharField(required=False, allow_blank=True, default="")

        class Meta:
            ref_name = "BackboneUpload"

    class FilterSerializer(serializers.Serializer):
        team = serializers.CharField(required=False)
        name = serializers.CharField(required=False)
        status = serializers.ChoiceField(choices=BackboneVersion.Status.values, required=False)

    @extend_schema(parameters=[FilterSerializer], responses=BackboneOutputSerializer(many=True))
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        queryset = backbone_list(user=request.user, filters=filters.validated_data)
        return paginated_response(request, queryset, BackboneOutputSerializer, view=self)

    @extend_schema(
        request=InputSerializer,
        responses={
            202: BackboneUploadedOutputSerializer,
            200: BackboneUploadedOutputSerializer,
            409: error_response("These bytes are already another backbone version with the same feature layer."),
        },
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        team = membership_get(user=request.user, team_slug=data.validated_data.pop("team")).team
        version, deduplicated = backbone_upload(team=team, user=request.user, **data.validated_data)
        body = dict(BackboneOutputSerializer(version).data, deduplicated=deduplicated)
        return Response(body, status=status.HTTP_200_OK if deduplicated else status.HTTP_202_ACCEPTED)


class BackboneDetailApi(APIView):
    @extend_schema(responses=BackboneOutputSerializer)
    def get(self, request, pk: int):
        return Response(BackboneOutputSerializer(backbone_get(user=request.user, pk=pk)).data)


class BackboneDownloadApi(APIView):
    @extend_schema(responses={(200, "application/octet-stream"): bytes})
    def get(self, request, pk: int):
        version = backbone_get(user=request.user, pk=pk)
        return blob_download_response(version.blob, filename=f"{version.name}-v{version.version}.keras")
