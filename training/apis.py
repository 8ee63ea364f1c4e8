"""REST endpoints for datasets, training jobs (cancel, retry) and forgetting reports."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from modelhub.core.api import paginated_response
from modelhub.teams.selectors import membership_get
from training.models import Dataset, ForgettingReport, Job
from training.selectors import dataset_get, dataset_list, job_get, job_list, report_get
from training.services import dataset_upload, job_cancel, job_create, job_retry, report_decide
from training.specs import JobSpecError, job_spec_parse


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
            "created_at",
            "finished_at",
        ]


class DatasetListCreateApi(APIView):
    parser_classes = [MultiPartParser]

    class InputSerializer(serializers.Serializer):
        team = serializers.CharField()
        name = serializers.CharField(max_length=100)
        file = serializers.FileField()

    @extend_schema(responses=DatasetOutputSerializer(many=True))
    def get(self, request):
        return paginated_response(request, dataset_list(user=request.user), DatasetOutputSerializer, view=self)

    @extend_schema(request=InputSerializer, responses={202: DatasetOutputSerializer})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        team = membership_get(user=request.user, team_slug=data.validated_data["team"]).team
        dataset = dataset_upload(
            team=team, user=request.user, name=data.validated_data["name"], file=data.validated_data["file"]
        )
        return Response(DatasetOutputSerializer(dataset).data, status=status.HTTP_202_ACCEPTED)


class DatasetDetailApi(APIView):
    @extend_schema(responses=DatasetOutputSerializer)
    def get(self, request, pk: int):
        return Response(DatasetOutputSerializer(dataset_get(user=request.user, pk=pk)).data)


class JobOutputSerializer(serializers.ModelSerializer):
    team = serializers.CharField(source="team.slug")
    created_by = serializers.CharField(source="created_by.username", default=None)
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


class JobListCreateApi(APIView):
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

    @extend_schema(request=InputSerializer, responses={202: JobOutputSerializer})
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
    @extend_schema(request=None, responses=JobOutputSerializer)
    def post(self, request, pk: int):
        job = job_cancel(job=job_get(user=request.user, pk=pk), user=request.user)
        return Response(JobOutputSerializer(job).data)


class JobRetryApi(APIView):
    @extend_schema(request=None, responses={202: JobOutputSerializer})
    def post(self, request, pk: int):
        job = job_retry(job=job_get(user=request.user, pk=pk), user=request.user)
        return Response(JobOutputSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class ReportOutputSerializer(serializers.ModelSerializer):
    reviewed_by = serializers.CharField(source="reviewed_by.username", default=None)

    class Meta:
        model = ForgettingReport
        fields = ["id", "job", "parent", "backbone", "rows", "status", "reviewed_by", "reviewed_at", "created_at"]


class ReportDetailApi(APIView):
    @extend_schema(responses=ReportOutputSerializer)
    def get(self, request, pk: int):
        return Response(ReportOutputSerializer(report_get(user=request.user, pk=pk)).data)


class ReportDecisionApi(APIView):
    accept = True

    @extend_schema(request=None, responses=ReportOutputSerializer)
    def post(self, request, pk: int):
        report = report_decide(report=report_get(user=request.user, pk=pk), user=request.user, accept=self.accept)
        return Response(ReportOutputSerializer(report).data)
