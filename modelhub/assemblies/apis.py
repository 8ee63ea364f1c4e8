"""REST endpoints for assemblies: create (or find), list, detail, download the zipped SavedModel."""

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from modelhub.artifacts.downloads import blob_download_response
from modelhub.assemblies.models import Assembly
from modelhub.assemblies.predicting import prediction_run_and_wait
from modelhub.assemblies.selectors import assembly_get, assembly_list
from modelhub.assemblies.services import assembly_create
from modelhub.core.api import paginated_response
from modelhub.core.errors import ApplicationError, ConflictError
from modelhub.core.schema import error_response
from modelhub.teams.selectors import membership_get


class AssemblyOutputSerializer(serializers.ModelSerializer):
    team = serializers.CharField(source="team.slug")
    tasks = serializers.SerializerMethodField()
    sha256 = serializers.CharField(source="blob.sha256", default=None, allow_null=True)
    size_bytes = serializers.IntegerField(source="blob.size_bytes", default=None, allow_null=True)
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = Assembly
        fields = [
            "id",
            "team",
            "name",
            "backbone",
            "status",
            "error",
            "tasks",
            "sha256",
            "size_bytes",
            "saved_model_bytes",
            "verification",
            "signatures",
            "manifest",
            "created_at",
            "started_at",
            "finished_at",
            "download_url",
        ]

    def get_tasks(self, obj) -> list[dict]:
        return [
            {
                "task_id": entry.task_id,
                "task": entry.head.task.slug,
                "head_version": entry.head_id,
                "version": entry.head.version,
                "output_width": entry.head.output_width,
                "labels": entry.head.labels,
            }
            for entry in obj.entries.select_related("head", "head__task")
        ]

    def get_download_url(self, obj) -> str | None:
        return f"/api/assemblies/{obj.pk}/download/" if obj.blob_id else None


class AssemblyCreatedOutputSerializer(AssemblyOutputSerializer):
    existing = serializers.BooleanField(
        help_text="True (status 200) when these heads on this backbone were already assembled; false (202) when "
        "a new assembly was queued."
    )

    class Meta(AssemblyOutputSerializer.Meta):
        fields = [*AssemblyOutputSerializer.Meta.fields, "existing"]


class PredictionOutputSerializer(serializers.Serializer):
    outputs = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField()),
        help_text="The head's outputs: one row of output_width numbers per input row.",
    )
    task = serializers.CharField()
    task_id = serializers.IntegerField()
    output_width = serializers.IntegerField()
    labels = serializers.ListField(child=serializers.CharField(), allow_null=True)


class AssemblyListCreateApi(APIView):
    class InputSerializer(serializers.Serializer):
        team = serializers.CharField()
        backbone = serializers.IntegerField()
        heads = serializers.ListField(child=serializers.IntegerField(), required=False, allow_null=True)
        name = serializers.CharField(required=False, allow_blank=True, default="", max_length=100)

        class Meta:
            ref_name = "AssemblyCreate"

    @extend_schema(responses=AssemblyOutputSerializer(many=True))
    def get(self, request):
        return paginated_response(request, assembly_list(user=request.user), AssemblyOutputSerializer, view=self)

    @extend_schema(
        request=InputSerializer,
        responses={202: AssemblyCreatedOutputSerializer, 200: AssemblyCreatedOutputSerializer},
        examples=[
            OpenApiExample(
                "Latest approved heads", value={"team": "vision", "backbone": 1, "name": "vision-v1"}, request_only=True
            )
        ],
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        team = membership_get(user=request.user, team_slug=values["team"]).team
        assembly, existed = assembly_create(
            team=team,
            user=request.user,
            backbone_id=values["backbone"],
            head_ids=values.get("heads"),
            name=values["name"],
        )
        body = dict(AssemblyOutputSerializer(assembly).data, existing=existed)
        return Response(body, status=status.HTTP_200_OK if existed else status.HTTP_202_ACCEPTED)


class AssemblyDetailApi(APIView):
    @extend_schema(responses=AssemblyOutputSerializer)
    def get(self, request, pk: int):
        return Response(AssemblyOutputSerializer(assembly_get(user=request.user, pk=pk)).data)


class AssemblyDownloadApi(APIView):
    @extend_schema(
        responses={
            (200, "application/zip"): bytes,
            409: error_response("The assembly is not ready yet (detail.current_status names its status)."),
        }
    )
    def get(self, request, pk: int):
        assembly = assembly_get(user=request.user, pk=pk)
        if assembly.status != Assembly.Status.READY or assembly.blob is None:
            raise ConflictError(
                f"Assembly {pk} is '{assembly.status}', not ready: it can be downloaded once it is built and verified.",
                detail={"current_status": assembly.status},
            )
        name = assembly.name or f"{assembly.backbone.name}-v{assembly.backbone.version}-assembly-{assembly.pk}"
        return blob_download_response(assembly.blob, filename=f"{name}.zip", content_type="application/zip")


class AssemblyPredictApi(APIView):
    """Try an assembly: {"task": slug | "task_id": n, "inputs": ...} -> {"outputs": ...}.

    `inputs` follows the manifest's backbone inputs: a nested list for a single input (numbers,
    or strings for a text model), an object by input name for several inputs. One example
    without the batch axis, or up to 256 rows.
    """

    class InputSerializer(serializers.Serializer):
        task = serializers.CharField(required=False)
        task_id = serializers.IntegerField(required=False, min_value=0)
        inputs = serializers.JSONField(
            help_text=(
                'One input: a nested list shaped like the input, e.g. [[0.1, 0.2]] or [["great movie"]]. '
                'Several inputs: an object by input name, e.g. {"token_ids": [[1, 2]], "numeric": [[0.5]]}. '
                "Names, shapes and dtypes: manifest.backbone.inputs."
            )
        )

        def validate(self, attrs):
            if ("task" in attrs) == ("task_id" in attrs):
                raise serializers.ValidationError("Give exactly one of 'task' (a slug) or 'task_id' (a number).")
            return attrs

        class Meta:
            ref_name = "Predict"

    @extend_schema(
        request=InputSerializer,
        examples=[
            OpenApiExample("One row", value={"task": "sentiment", "inputs": [[0.1, 0.2, 0.3]]}, request_only=True)
        ],
        responses={
            200: PredictionOutputSerializer,
            400: error_response("The worker could not run the prediction (code prediction_failed)."),
            409: error_response("The assembly is not ready: predictions need status 'ready'."),
            504: error_response(
                "No worker answered within MODELHUB_PREDICT_TIMEOUT seconds (code prediction_timeout). Try again."
            ),
        },
    )
    def post(self, request, pk: int):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        assembly = assembly_get(user=request.user, pk=pk)
        prediction = prediction_run_and_wait(
            assembly=assembly,
            user=request.user,
            task=values.get("task"),
            task_id=values.get("task_id"),
            inputs=values["inputs"],
        )
        if prediction.status != prediction.Status.SUCCEEDED:
            raise ApplicationError(f"The prediction failed in the worker: {prediction.error}", code="prediction_failed")
        entry = next(e for e in assembly.manifest["heads"] if e["task_id"] == prediction.task_id)
        return Response(
            {
                "outputs": prediction.outputs,
                "task": entry["task"],
                "task_id": entry["task_id"],
                "output_width": entry["output_width"],
                "labels": entry["labels"],
            }
        )
