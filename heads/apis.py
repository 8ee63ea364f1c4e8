"""REST endpoints for heads, the review workflow, comments, history, imports and comparisons."""

from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from artifacts.downloads import blob_download_response
from core.api import TRACKED_WORK_FIELDS, paginated_response
from core.schema import error_response
from heads.compare import COMPARE_RETRY_AFTER_SECONDS, head_compare
from heads.imports import TASKS_EXAMPLE, TASKS_HELP, import_create
from heads.models import HeadComment, HeadEvent, HeadVersion, ModelImport
from heads.origin import FROM_FILE_SCHEMA, SIBLINGS_SCHEMA, origin_from_file, origin_siblings
from heads.selectors import head_get, head_get_comparable, head_history, head_list, import_get, import_list
from heads.services import head_comment_add, head_transition, head_upload
from teams.selectors import membership_get


class HeadOutputSerializer(serializers.ModelSerializer):
    team = serializers.CharField(source="task.team.slug")
    task = serializers.CharField(source="task.slug")
    backbone_name = serializers.CharField(source="backbone.name")
    backbone_version = serializers.IntegerField(source="backbone.version")
    sha256 = serializers.CharField(source="blob.sha256")
    size_bytes = serializers.IntegerField(source="blob.size_bytes")
    created_by = serializers.CharField(source="created_by.username", default=None, allow_null=True)
    carried_by = serializers.CharField(source="carried_by.username", default=None, allow_null=True)
    review = serializers.SerializerMethodField()
    download_url = serializers.SerializerMethodField()
    from_file = serializers.SerializerMethodField(
        help_text="For a head imported from a file with several outputs: the file (name, sha256, every output) "
        "and this head's output; else null."
    )
    siblings = serializers.SerializerMethodField(
        help_text="The other heads imported from the same file (one per other output): head version, task, output."
    )

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
            "branch",
            "labels",
            "metrics",
            "description",
            "spec",
            "origin",
            "from_file",
            "siblings",
            "review",
            "created_by",
            "carried_from",
            "carried_by",
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

    @extend_schema_field(FROM_FILE_SCHEMA)
    def get_from_file(self, obj) -> dict | None:
        return origin_from_file(obj.origin)

    @extend_schema_field(SIBLINGS_SCHEMA)
    def get_siblings(self, obj) -> list:
        return origin_siblings(obj.origin)


class HeadListCreateApi(APIView):
    throttle_scope = "uploads"  # POST counted per user: settings.MODELHUB_THROTTLE_RATES
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
                "detail.current_status names it), or archive of a version an alias points to (code aliased; "
                "detail.aliases names them)."
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
            "min_shared_fraction",
            "probe_shape",
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

    throttle_scope = "imports"  # POST counted per user: settings.MODELHUB_THROTTLE_RATES
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
        branches = serializers.BooleanField(
            required=False,
            default=False,
            help_text="Let models differ from the first one in the top of the backbone: each keeps the layers "
            "above its own branch point as a branch (a head version that owns them). Off: any backbone "
            "difference fails the whole import.",
        )
        min_shared_fraction = serializers.FloatField(
            required=False,
            default=0.5,
            min_value=0.0,
            max_value=1.0,
            help_text="With branches: the least share of the backbone's parameters that the trunk every model "
            "shares bit for bit must hold, else the import is refused with the numbers.",
        )
        probe_shape = serializers.JSONField(
            required=False,
            default=dict,
            help_text='Optional {input name: shape of one row}, e.g. {"audio": [16000, 1]}: the length used for '
            "checks on inputs of open (None) length. Left out, the worker derives one every layer accepts "
            "(strides, kernel sizes, pooling) and refuses, naming the layer, when none does.",
        )

    class ImportFromUploadsInputSerializer(ImportFieldsSerializer):
        uploads = serializers.ListField(
            child=serializers.IntegerField(min_value=1),
            help_text="Ids returned by POST /api/uploads/ for this team, one per .keras file, in file order.",
        )
        tasks = serializers.JSONField(required=False, help_text=TASKS_HELP)

        class Meta:
            ref_name = "ImportFromUploads"

    class ImportMultipartInputSerializer(ImportFieldsSerializer):
        files = serializers.ListField(child=serializers.FileField(), allow_empty=False)
        tasks = serializers.CharField(
            required=False,
            allow_blank=True,
            default="",
            help_text=f"As JSON. {TASKS_HELP}",
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
            ),
            OpenApiExample(
                "A variable-length audio backbone, its probe length named",
                value={
                    "team": "audio",
                    "backbone_name": "wav",
                    "uploads": [21, 22],
                    "probe_shape": {"audio": [16000, 1]},
                },
                request_only=True,
                media_type="application/json",
            ),
            OpenApiExample(
                "A file with two outputs, its tasks named",
                value={"team": "text", "backbone_name": "encoder", "uploads": [11, 12], "tasks": TASKS_EXAMPLE},
                request_only=True,
                media_type="application/json",
            ),
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
            min_shared_fraction=values["min_shared_fraction"],
            probe_shape=values.get("probe_shape"),
            **sources,
        )
        return Response(ImportOutputSerializer(model_import).data, status=status.HTTP_202_ACCEPTED)


class ImportDetailApi(APIView):
    @extend_schema(responses=ImportOutputSerializer)
    def get(self, request, pk: int):
        return Response(ImportOutputSerializer(import_get(user=request.user, pk=pk)).data)


class HeadSummarySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    task = serializers.CharField()
    version = serializers.IntegerField()
    status = serializers.ChoiceField(choices=HeadVersion.Status.values)
    backbone = serializers.IntegerField()
    backbone_name = serializers.CharField()
    backbone_version = serializers.IntegerField()
    output_width = serializers.IntegerField(allow_null=True)
    labels = serializers.ListField(child=serializers.CharField())
    description = serializers.CharField(allow_blank=True)
    metrics = serializers.DictField(help_text="The metrics recorded with the version (training), without history.")
    url = serializers.CharField(help_text="The version's dashboard page.")


class EvaluationSideSerializer(serializers.Serializer):
    evaluation = serializers.IntegerField()
    backbone = serializers.IntegerField(help_text="The backbone version the head was evaluated through.")
    job = serializers.IntegerField(allow_null=True, help_text="The evaluate_head job that measured it.")
    metrics = serializers.DictField(help_text='E.g. {"loss", "accuracy", "num_examples"} or {"loss", "mae", ...}.')
    created_at = serializers.DateTimeField()


class CompareMetricsSerializer(serializers.Serializer):
    dataset = serializers.IntegerField()
    dataset_name = serializers.CharField()
    split = serializers.ChoiceField(choices=["validation", "all"])
    num_examples = serializers.IntegerField()
    a = EvaluationSideSerializer(help_text="a's newest evaluation on this dataset.")
    b = EvaluationSideSerializer(help_text="b's newest evaluation on this dataset.")
    delta = serializers.DictField(child=serializers.FloatField(), help_text="b - a per numeric metric.")


class WeightChangeSerializer(serializers.Serializer):
    name = serializers.CharField()
    shape = serializers.ListField(child=serializers.IntegerField())
    relative_l2_change = serializers.FloatField(allow_null=True, help_text="||wb - wa|| / ||wa||; null if wa is 0.")


class LayerChangeSerializer(serializers.Serializer):
    layer = serializers.CharField(help_text="The layer's name (path) in a.")
    layer_b = serializers.CharField(help_text="Its counterpart's name in b.")
    class_name = serializers.CharField()
    relative_l2_change = serializers.FloatField(allow_null=True, help_text="Over all of the layer's weights.")
    weights = WeightChangeSerializer(many=True)


class CompareWeightsSerializer(serializers.Serializer):
    same_architecture = serializers.BooleanField(allow_null=True, help_text="null: the files could not be read.")
    difference = serializers.CharField(allow_null=True, help_text="How the architectures differ (or why unread).")
    relative_l2_change = serializers.FloatField(allow_null=True, help_text="Over all weights of the head.")
    layers = LayerChangeSerializer(many=True, help_text="Per layer with weights, in a's graph order.")
    computing = serializers.BooleanField(
        help_text="True while a worker compares the weights (a large pair); ask again after Retry-After seconds."
    )


class CompareOutputsSerializer(serializers.Serializer):
    dataset = serializers.IntegerField()
    dataset_name = serializers.CharField()
    split = serializers.ChoiceField(choices=["validation", "all"])
    num_rows = serializers.IntegerField(help_text="Rows compared (the rows both evaluations kept).")
    max_abs_diff = serializers.FloatField(allow_null=True, help_text="null when the output widths differ.")
    num_top_class_differs = serializers.IntegerField()
    top_class_differs_fraction = serializers.FloatField()


class HeadCompareSerializer(serializers.Serializer):
    a = HeadSummarySerializer()
    b = HeadSummarySerializer()
    metrics = CompareMetricsSerializer(many=True, help_text="One row per dataset both versions were evaluated on.")
    weights = CompareWeightsSerializer()
    outputs = CompareOutputsSerializer(
        allow_null=True, help_text="Agreement on the newest shared evaluation dataset; null when there is none."
    )


class HeadCompareApi(APIView):
    """Compare two head versions of your teams: metrics per shared dataset, weights, outputs."""

    throttle_scope = "compare"  # counted per user (a GET): settings.MODELHUB_THROTTLE_RATES

    class FilterSerializer(serializers.Serializer):
        a = serializers.IntegerField(min_value=1, help_text="Head version id (the reference).")
        b = serializers.IntegerField(min_value=1, help_text="Head version id (compared with a).")

    @extend_schema(
        parameters=[FilterSerializer],
        responses={
            200: HeadCompareSerializer,
            404: error_response("a or b is not a head version of your teams."),
            409: error_response(
                "a or b is still being validated or was rejected (code head_not_validated): compare reads "
                "only files a worker has validated."
            ),
        },
    )
    def get(self, request):
        query = self.FilterSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        a = head_get_comparable(user=request.user, pk=query.validated_data["a"])
        b = head_get_comparable(user=request.user, pk=query.validated_data["b"])
        comparison = head_compare(a=a, b=b)
        response = Response(HeadCompareSerializer(comparison).data)
        if comparison["weights"]["computing"]:
            response["Retry-After"] = str(COMPARE_RETRY_AFTER_SECONDS)
        return response
