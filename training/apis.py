"""REST endpoints for datasets, training jobs (cancel, retry), head evaluations and forgetting reports."""

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from backbones.selectors import backbone_get
from core.api import paginated_response
from core.schema import JsonSchemaBody, error_response
from heads.selectors import head_get
from teams.selectors import membership_get
from training.lineage import backbone_family_graph
from training.models import Dataset, ForgettingReport, Job
from training.selectors import dataset_fitting_backbones, dataset_get, dataset_list, job_get, job_list, report_get
from training.services import dataset_upload, head_evaluate, job_cancel, job_create, job_retry, report_decide
from training.specs import JOB_SPECS, JobSpecError, Spec, job_spec_parse


class DatasetOutputSerializer(serializers.ModelSerializer):
    team = serializers.CharField(source="team.slug")
    sha256 = serializers.CharField(source="blob.sha256")
    size_bytes = serializers.IntegerField(source="blob.size_bytes")

    class Meta:
        model = Dataset
        fields = [
            "id",
            "team",
            "name",
            "format",
            "status",
            "error",
            "filename",
            "sha256",
            "size_bytes",
            "num_examples",
            "num_validation",
            "input_shape",
            "num_classes",
            "target",
            "class_histogram",
            "labels",
            "columns",
            "inputs",
            "preview",
            "created_at",
            "finished_at",
        ]


class DatasetListOutputSerializer(DatasetOutputSerializer):
    """A dataset in a list: without `preview` (up to a few KB a dataset); GET /api/datasets/{id}/ has it."""

    class Meta(DatasetOutputSerializer.Meta):
        fields = [name for name in DatasetOutputSerializer.Meta.fields if name != "preview"]


class DatasetDetailOutputSerializer(DatasetOutputSerializer):
    """A dataset with the team's ready backbones it fits (computed when read)."""

    fits = serializers.SerializerMethodField(
        help_text="The team's ready backbone versions this dataset fits: [{id, label, inputs}]."
    )

    class Meta(DatasetOutputSerializer.Meta):
        fields = [*DatasetOutputSerializer.Meta.fields, "fits"]

    def get_fits(self, dataset) -> list[dict]:
        return self.context.get("fits", [])


COLUMNS_HELP = (
    "Tables only (.csv, .jsonl, .ndjson, .parquet): JSON mapping the columns, e.g. "
    '{"inputs": {"text": "review"}, "label": "sentiment", "validation": {"fraction": 0.1}}. '
    "inputs: {backbone input name: column}, or one column for a single input (a list of numeric columns is one "
    'vector input); label (default "label"); validation: {"fraction": f, "seed": s} or {"column": c, "value": v}; '
    'label_order: "sorted" (default) or "first_seen". Without it, a "label" column and exactly one other column.'
)


class DatasetListCreateApi(APIView):
    throttle_scope = "uploads"  # POST counted per user: settings.MODELHUB_THROTTLE_RATES
    parser_classes = [MultiPartParser]

    class InputSerializer(serializers.Serializer):
        team = serializers.CharField()
        name = serializers.CharField(max_length=100)
        file = serializers.FileField()  # .npz, .csv, .jsonl/.ndjson, .parquet, or a .zip of image folders
        columns = serializers.CharField(required=False, allow_blank=True, help_text=COLUMNS_HELP)

        class Meta:
            ref_name = "DatasetUpload"

    @extend_schema(responses=DatasetListOutputSerializer(many=True))
    def get(self, request):
        datasets = dataset_list(user=request.user).defer("preview")
        return paginated_response(request, datasets, DatasetListOutputSerializer, view=self)

    @extend_schema(
        request=InputSerializer,
        responses={202: DatasetOutputSerializer},
        examples=[
            OpenApiExample(
                "A CSV of reviews",
                value={
                    "team": "nlp",
                    "name": "reviews",
                    "file": "reviews.csv",
                    "columns": '{"inputs": {"text": "review"}, "label": "sentiment", "validation": {"fraction": 0.1}}',
                },
                request_only=True,
            )
        ],
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        team = membership_get(user=request.user, team_slug=data.validated_data["team"]).team
        dataset = dataset_upload(
            team=team,
            user=request.user,
            name=data.validated_data["name"],
            file=data.validated_data["file"],
            columns=data.validated_data.get("columns"),
        )
        return Response(DatasetOutputSerializer(dataset).data, status=status.HTTP_202_ACCEPTED)


class DatasetDetailApi(APIView):
    @extend_schema(responses=DatasetDetailOutputSerializer)
    def get(self, request, pk: int):
        dataset = dataset_get(user=request.user, pk=pk)
        fits = dataset_fitting_backbones(dataset=dataset)
        return Response(DatasetDetailOutputSerializer(dataset, context={"fits": fits}).data)


class JobOutputSerializer(serializers.ModelSerializer):
    team = serializers.CharField(source="team.slug")
    created_by = serializers.CharField(source="created_by.username", default=None, allow_null=True)
    retried_by = serializers.CharField(source="retried_by.username", default=None, allow_null=True)
    forgetting_report = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = [
            "id",
            "team",
            "kind",
            "status",
            "params",
            "progress",
            "metrics",
            "log",
            "result",
            "error",
            "cancel_requested",
            "retry_of",
            "retried_by",
            "worker",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
            "forgetting_report",
        ]

    def get_forgetting_report(self, obj) -> int | None:
        report = ForgettingReport.objects.filter(job=obj).values_list("pk", flat=True).first()
        return report


def job_request_schemas() -> tuple[dict[str, dict], dict]:
    """Return the JSON schemas of POST /api/jobs/ bodies, from the job specs: (components, body).

    One component per kind ("TrainHeadJobRequest": team, kind and that kind's parameters) and
    per nested spec ("HeadSpec"); the body is one of the kinds, told apart by ``kind``.
    """
    components: dict[str, dict] = {}

    def ref(spec: type[Spec]) -> dict:
        name = spec.__name__
        if name not in components:
            components[name] = {}  # reserved first: a spec may nest itself
            components[name] = spec.json_schema(ref)
        return {"$ref": f"#/components/schemas/{name}"}

    mapping = {}
    for kind, spec in JOB_SPECS.items():
        params = spec.json_schema(ref)
        name = f"{spec.__name__.removesuffix('Spec')}JobRequest"
        components[name] = {
            **params,
            "properties": {
                "team": {"type": "string", "minLength": 1, "description": "Slug of the team that runs the job."},
                "kind": {"type": "string", "enum": [kind]},
                **params["properties"],
            },
            "required": ["team", "kind", *params.get("required", [])],
        }
        mapping[kind] = f"#/components/schemas/{name}"
    body = {
        "oneOf": [{"$ref": target} for target in mapping.values()],
        "discriminator": {"propertyName": "kind", "mapping": mapping},
    }
    return components, body


class JobListCreateApi(APIView):
    throttle_scope = "jobs"  # POST counted per user: settings.MODELHUB_THROTTLE_RATES
    parser_classes = [JSONParser]

    class InputSerializer(serializers.Serializer):
        """{team, kind, ...the job's parameters}: the parameters are read by the kind's spec.

        training.specs documents every parameter (type, default, bounds); a bad one is a 400
        naming it, e.g. {"head": {"dropout": ["must be a number in [0, 1); got 'x'"]}}.
        """

        team = serializers.CharField()
        kind = serializers.ChoiceField(choices=Job.Kind.values)

        def validate(self, attrs: dict) -> dict:
            params = {key: value for key, value in self.initial_data.items() if key not in ("team", "kind")}
            try:
                attrs["spec"] = job_spec_parse(attrs["kind"], params)
            except JobSpecError as exc:
                raise serializers.ValidationError(exc.errors) from None
            return attrs

        class Meta:
            ref_name = "JobCreate"

    class FilterSerializer(serializers.Serializer):
        kind = serializers.ChoiceField(choices=Job.Kind.values, required=False)
        status = serializers.ChoiceField(choices=Job.Status.values, required=False)
        team = serializers.CharField(required=False)

    @extend_schema(parameters=[FilterSerializer], responses=JobOutputSerializer(many=True))
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        return paginated_response(
            request, job_list(user=request.user, filters=filters.validated_data), JobOutputSerializer, view=self
        )

    @extend_schema(
        request={"application/json": JsonSchemaBody(job_request_schemas)},
        responses={202: JobOutputSerializer},
        examples=[
            OpenApiExample(
                "Train a head",
                value={
                    "team": "vision",
                    "kind": "train_head",
                    "backbone": 1,
                    "dataset": 2,
                    "task": "sentiment",
                    "head": {"type": "dense"},
                    "epochs": 2,
                },
                request_only=True,
            )
        ],
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        team = membership_get(user=request.user, team_slug=data.validated_data["team"]).team
        job = job_create(team=team, user=request.user, spec=data.validated_data["spec"])
        return Response(JobOutputSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class JobDetailApi(APIView):
    @extend_schema(responses=JobOutputSerializer)
    def get(self, request, pk: int):
        return Response(JobOutputSerializer(job_get(user=request.user, pk=pk)).data)


class JobCancelApi(APIView):
    @extend_schema(
        request=None,
        responses={
            200: JobOutputSerializer,
            409: error_response("The job has finished already (detail.current_status names how)."),
        },
    )
    def post(self, request, pk: int):
        job = job_cancel(job=job_get(user=request.user, pk=pk), user=request.user)
        return Response(JobOutputSerializer(job).data)


class JobRetryApi(APIView):
    throttle_scope = "jobs"  # POST counted per user: settings.MODELHUB_THROTTLE_RATES

    @extend_schema(
        request=None,
        responses={
            202: JobOutputSerializer,
            400: error_response("The job's stored parameters are no longer valid: start a new job."),
            409: error_response(
                "The job is not failed or cancelled, or it was retried already (detail.retry names that job)."
            ),
        },
    )
    def post(self, request, pk: int):
        job = job_retry(job=job_get(user=request.user, pk=pk), user=request.user)
        return Response(JobOutputSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class ReportOutputSerializer(serializers.ModelSerializer):
    reviewed_by = serializers.CharField(source="reviewed_by.username", default=None, allow_null=True)

    class Meta:
        model = ForgettingReport
        fields = ["id", "job", "parent", "backbone", "rows", "status", "reviewed_by", "reviewed_at", "created_at"]


class ReportDetailApi(APIView):
    @extend_schema(responses=ReportOutputSerializer)
    def get(self, request, pk: int):
        return Response(ReportOutputSerializer(report_get(user=request.user, pk=pk)).data)


class ReportDecisionApi(APIView):
    accept = True

    @extend_schema(
        request=None,
        responses={
            200: ReportOutputSerializer,
            403: error_response(
                "Only reviewers and admins decide, and the job's author may reject but not accept its report."
            ),
            409: error_response("The report was decided already (detail.current_status)."),
        },
    )
    def post(self, request, pk: int):
        report = report_decide(report=report_get(user=request.user, pk=pk), user=request.user, accept=self.accept)
        return Response(ReportOutputSerializer(report).data)


class HeadEvaluateApi(APIView):
    """Queue an evaluate_head job: the head version's metrics on a dataset (stored with the version)."""

    throttle_scope = "evaluate"  # POST counted per user: settings.MODELHUB_THROTTLE_RATES
    parser_classes = [JSONParser]

    class InputSerializer(serializers.Serializer):
        dataset = serializers.IntegerField(
            min_value=1,
            help_text="Dataset id (ready, in the head's team). Its validation split is used, or all of it "
            "when it has none.",
        )

        class Meta:
            ref_name = "HeadEvaluate"

    @extend_schema(
        request=InputSerializer,
        responses={
            202: JobOutputSerializer,
            400: error_response(
                "The dataset cannot evaluate this head: not ready, inputs not fitting the head's backbone, labels "
                "not fitting the head's outputs, or the head is not validated. The message says what to change."
            ),
            404: error_response("The head version is not in your teams."),
        },
        examples=[OpenApiExample("Evaluate on a dataset", value={"dataset": 2}, request_only=True)],
    )
    def post(self, request, pk: int):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        head = head_get(user=request.user, pk=pk)
        job = head_evaluate(head=head, dataset_id=data.validated_data["dataset"], user=request.user)
        return Response(JobOutputSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class LineageNodeSerializer(serializers.Serializer):
    id = serializers.CharField(help_text='"<kind>:<id>", e.g. "backbone:3", "head:12", "heads:3" (a "+N heads" group).')
    kind = serializers.ChoiceField(choices=["backbone", "head", "head_group", "dataset", "job", "import", "assembly"])
    label = serializers.CharField()
    url = serializers.CharField(help_text="The node's dashboard page.")
    detail = serializers.CharField(allow_blank=True)


class LineageEdgeSerializer(serializers.Serializer):
    source = serializers.CharField()
    target = serializers.CharField()
    kind = serializers.ChoiceField(
        choices=["parent", "made", "input", "head", "trained_on", "trained_by", "assembly"],
        help_text="parent: backbone -> child version; made: job or import -> backbone; input: dataset -> job; "
        "head: backbone -> head (or group); trained_on / trained_by: head -> dataset / job; assembly: backbone -> "
        "assembly.",
    )


class LineageSerializer(serializers.Serializer):
    root = serializers.IntegerField(help_text="The upload or import that started the family.")
    num_versions = serializers.IntegerField()
    nodes = LineageNodeSerializer(many=True)
    edges = LineageEdgeSerializer(many=True)


class BackboneLineageApi(APIView):
    """The family graph of a backbone version: versions, parents, heads, datasets, jobs, assemblies.

    Heads beyond the newest few of a version are one "head_group" node with their count.
    """

    @extend_schema(responses={200: LineageSerializer, 404: error_response("Not a backbone version of your teams.")})
    def get(self, request, pk: int):
        backbone = backbone_get(user=request.user, pk=pk)
        return Response(LineageSerializer(backbone_family_graph(backbone=backbone).as_json()).data)
