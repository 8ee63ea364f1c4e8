"""REST endpoints for heads, the review workflow, comments, history and imports."""

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from heads.models import HeadComment, HeadEvent, HeadVersion, ModelImport
from heads.selectors import head_get, head_history, head_list, import_get, import_list
from heads.services import head_comment_add, head_transition, head_upload, import_create
from modelhub.artifacts.downloads import blob_download_response
from modelhub.core.api import TRACKED_WORK_FIELDS, paginated_response
from modelhub.core.schema import error_response
from modelhub.teams.selectors import membership_get


class HeadOutputSerializer(serializers.ModelSerializer):
    team = serializers.CharField(source="task.team.slug")
    task = serializers.CharField(source="task.slug")
    backbone_name = serializers.CharField(source="backbone.name")
    backbone_version = serializers.IntegerField(source="backbone.version")
    sha256 = serializers.CharField(source="blob.sha256")
    size_bytes = serializers.IntegerField(source="blob.size_bytes")
    created_by = serializers.CharField(source="created_by.username", default=None, allow_null=True)
    review = serializers.SerializerMethodField()
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = HeadVersion
        fields = [
            "id",
            "team",
            "task",
            "version",
            "backbone",
            "backbone_name",
            "backbone_version",
            "status",
            "error",
            "sha256",
            "size_bytes",
            "filename",
            "output_width",
            "labels",
            "metrics",
            "description",
            "spec",
            "origin",
            "review",
            "created_by",
            "created_at",
            *TRACKED_WORK_FIELDS,
            "download_url",
        ]

    def get_review(self, obj) -> dict:
        return {
            "status": obj.status,
            "reviewed_by": obj.reviewed_by.username if obj.reviewed_by_id else None,
            "reviewed_at": obj.reviewed_at,
        }

    def get_download_url(self, obj) -> str:
        return f"/api/heads/{obj.pk}/download/"


class HeadListCreateApi(APIView):
    parser_classes = [MultiPartParser]

    class InputSerializer(serializers.Serializer):
        backbone = serializers.IntegerField()
        task = serializers.CharField(max_length=63)
        file = serializers.FileField()
        labels = serializers.CharField(required=False, allow_blank=True, default="")
        description = serializers.CharField(required=False, allow_blank=True, default="")

        class Meta:
            ref_name = "HeadUpload"

    class FilterSerializer(serializers.Serializer):
        team = serializers.CharField(required=False)
        backbone = serializers.IntegerField(required=False)
        status = serializers.ChoiceField(choices=HeadVersion.Status.values, required=False)
        task = serializers.CharField(required=False)
        q = serializers.CharField(required=False)

    @extend_schema(parameters=[FilterSerializer], responses=HeadOutputSerializer(many=True))
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        return paginated_response(
            request, head_list(user=request.user, filters=filters.validated_data), HeadOutputSerializer, view=self
        )

    @extend_schema(request=InputSerializer, responses={202: HeadOutputSerializer})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        head = head_upload(
            user=request.user,
            backbone_id=values["backbone"],
            task=values["task"],
            file=values["file"],
            labels=values["labels"],
            description=values["description"],
        )
        return Response(HeadOutputSerializer(head).data, status=status.HTTP_202_ACCEPTED)


class HeadDetailApi(APIView):
    @extend_schema(responses=HeadOutputSerializer)
    def get(self, request, pk: int):
        return Response(HeadOutputSerializer(head_get(user=request.user, pk=pk)).data)


class HeadDownloadApi(APIView):
    @extend_schema(responses={(200, "application/octet-stream"): bytes})
    def get(self, request, pk: int):
        head = head_get(user=request.user, pk=pk)
        return blob_download_response(head.blob, filename=f"{head.task.slug}-v{head.version}.keras")


class HeadTransitionApi(APIView):
    """POST submit / approve / request_changes / archive, with an optional comment."""

    action = ""
    parser_classes = [JSONParser, MultiPartParser]

    class InputSerializer(serializers.Serializer):
        comment = serializers.CharField(required=False, allow_blank=True, default="")

        class Meta:
            ref_name = "HeadTransition"

    @extend_schema(
        request=InputSerializer,
        examples=[OpenApiExample("With a comment", value={"comment": "LGTM"}, request_only=True)],
        responses={
            200: HeadOutputSerializer,
            403: error_response(
                "Your role does not allow this action: approve and request_changes need a reviewer or admin who "
                "did not author the head; archive needs its author, a reviewer or an admin."
            ),
            409: error_response(
                "The action is not allowed from the head's current status (code invalid_transition; "
                "detail.current_status names it)."
            ),
        },
    )
    def post(self, request, pk: int):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        head = head_get(user=request.user, pk=pk)
        head = head_transition(head=head, user=request.user, action=self.action, comment=data.validated_data["comment"])
        return Response(HeadOutputSerializer(head_get(user=request.user, pk=head.pk)).data)


class CommentSerializer(serializers.ModelSerializer):
    author = serializers.CharField(source="author.username", default=None, allow_null=True)

    class Meta:
        model = HeadComment
        fields = ["id", "author", "body", "created_at"]


class HeadCommentsApi(APIView):
    parser_classes = [JSONParser, MultiPartParser]

    class InputSerializer(serializers.Serializer):
        body = serializers.CharField()

        class Meta:
            ref_name = "CommentCreate"

    @extend_schema(responses=CommentSerializer(many=True))
    def get(self, request, pk: int):
        head = head_get(user=request.user, pk=pk)
        return paginated_response(request, head.comments.select_related("author"), CommentSerializer, view=self)

    @extend_schema(
        request=InputSerializer,
        responses={201: CommentSerializer},
        examples=[OpenApiExample("Comment", value={"body": "Holdout accuracy looks good."}, request_only=True)],
    )
    def post(self, request, pk: int):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        comment = head_comment_add(
            head=head_get(user=request.user, pk=pk), user=request.user, body=data.validated_data["body"]
        )
        return Response(CommentSerializer(comment).data, status=status.HTTP_201_CREATED)


class EventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor.username", default=None, allow_null=True)

    class Meta:
        model = HeadEvent
        fields = ["id", "action", "actor", "old_status", "new_status", "comment", "created_at"]


class HeadHistoryApi(APIView):
    @extend_schema(responses=EventSerializer(many=True))
    def get(self, request, pk: int):
        head = head_get(user=request.user, pk=pk)
        return paginated_response(request, head_history(head=head), EventSerializer, view=self)


class ImportOutputSerializer(serializers.ModelSerializer):
    team = serializers.CharField(source="team.slug")

    class Meta:
        model = ModelImport
        fields = [
            "id",
            "team",
            "backbone_name",
            "feature_layer",
            "branches",
            "status",
            "error",
            "report",
            "summary",
            "backbone",
            "created_at",
            *TRACKED_WORK_FIELDS,
        ]


class ImportListCreateApi(APIView):
    """Import K full models: files sent along (multipart) or staged with POST /api/uploads/ (JSON)."""

    parser_classes = [JSONParser, MultiPartParser]

    class ImportFieldsSerializer(serializers.Serializer):
        team = serializers.CharField()
        backbone_name = serializers.CharField(max_length=100)
        feature_layer = serializers.CharField(
            max_length=200,
            required=False,
            allow_blank=True,
            default="",
            help_text="Last layer of the shared backbone. Optional with two or more files: the worker "
            "then picks the deepest layer the models share and records it here.",
        )
        branches = serializers.BooleanField(required=False, default=False)

    class ImportFromUploadsInputSerializer(ImportFieldsSerializer):
        uploads = serializers.ListField(
            child=serializers.IntegerField(min_value=1),
            help_text="Ids returned by POST /api/uploads/ for this team, one per .keras file, in file order.",
        )
        tasks = serializers.ListField(
            child=serializers.CharField(), required=False, help_text="One task slug per upload; else from file names."
        )

        class Meta:
            ref_name = "ImportFromUploads"

    class ImportMultipartInputSerializer(ImportFieldsSerializer):
        files = serializers.ListField(child=serializers.FileField(), allow_empty=False)
        tasks = serializers.CharField(
            required=False,
            allow_blank=True,
            default="",
            help_text='JSON list of task slugs, one per file, e.g. ["sentiment", "topic"]; else from file names.',
        )

        class Meta:
            ref_name = "ImportMultipart"

    @extend_schema(responses=ImportOutputSerializer(many=True))
    def get(self, request):
        return paginated_response(request, import_list(user=request.user), ImportOutputSerializer, view=self)

    @extend_schema(
        request={
            "application/json": ImportFromUploadsInputSerializer,
            "multipart/form-data": ImportMultipartInputSerializer,
        },
        examples=[
            OpenApiExample(
                "From staged uploads",
                value={"team": "vision", "backbone_name": "mobilenet", "uploads": [11, 12]},
                request_only=True,
                media_type="application/json",
            )
        ],
        responses={202: ImportOutputSerializer},
    )
    def post(self, request):
        from_uploads = request.content_type.startswith("application/json")
        serializer = self.ImportFromUploadsInputSerializer if from_uploads else self.ImportMultipartInputSerializer
        data = serializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        team = membership_get(user=request.user, team_slug=values["team"]).team
        sources = (
            {"upload_ids": values["uploads"]}
            if from_uploads
            else {"files": [(uploaded.name, uploaded) for uploaded in values["files"]]}
        )
        model_import = import_create(
            team=team,
            user=request.user,
            backbone_name=values["backbone_name"],
            feature_layer=values["feature_layer"],
            tasks=values.get("tasks"),
            branches=values["branches"],
            **sources,
        )
        return Response(ImportOutputSerializer(model_import).data, status=status.HTTP_202_ACCEPTED)


class ImportDetailApi(APIView):
    @extend_schema(responses=ImportOutputSerializer)
    def get(self, request, pk: int):
        return Response(ImportOutputSerializer(import_get(user=request.user, pk=pk)).data)
