"""REST endpoints for assemblies: create (or find), list, detail, download the zipped SavedModel,
and trial predictions (answered in time, or polled by id). Exports: assemblies.export_apis."""

import math

from django.urls import reverse
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from artifacts.downloads import blob_download_response
from assemblies.models import Assembly, Prediction
from assemblies.selectors import assembly_get, assembly_list, prediction_get
from assemblies.services import (
    DEFAULT_WAIT_SECONDS,
    MAX_WAIT_SECONDS,
    assembly_create,
    prediction_is_finished,
    prediction_run_and_wait,
)
from core.api import paginated_response
from core.errors import ApplicationError, ConflictError, ValidationError
from core.schema import error_response
from teams.selectors import membership_get


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
            "task_signatures",
            "resolved_from",
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


RUNTIMES = ["onnxruntime", "tensorflow"]


class PredictionOutputSerializer(serializers.Serializer):
    """The answer of POST .../predict/ when the worker answered within `wait` seconds (200)."""

    outputs = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField()),
        help_text="The head's outputs: one row of output_width numbers per input row.",
    )
    task = serializers.CharField()
    task_id = serializers.IntegerField()
    output_width = serializers.IntegerField()
    labels = serializers.ListField(child=serializers.CharField(), allow_null=True)
    prediction = serializers.IntegerField(help_text="The prediction's id (GET .../predictions/{pid}/ shows it again).")
    status = serializers.ChoiceField(choices=["succeeded"])
    runtime = serializers.ChoiceField(
        choices=RUNTIMES,
        help_text="Which runtime answered: onnxruntime (the assembly's verified ONNX export, quantization none) "
        "or tensorflow (the SavedModel).",
    )


class PredictionPendingSerializer(serializers.Serializer):
    """The answer of POST .../predict/ when no worker answered within `wait` seconds (202)."""

    prediction = serializers.IntegerField(help_text="The prediction's id.")
    status = serializers.ChoiceField(choices=["queued", "running"])
    poll = serializers.CharField(help_text="GET this path until status is 'succeeded' or 'failed'.")


# Inline: a named enum of these four values would collide with ImportStatusEnum (the same set).
@extend_schema_field({"type": "string", "enum": Prediction.Status.values})
class PredictionStatusField(serializers.ChoiceField):
    def __init__(self, **kwargs):
        super().__init__(choices=Prediction.Status.choices, **kwargs)


class PredictionDetailSerializer(serializers.Serializer):
    """A trial prediction: its status and, once a worker answered, its outputs or its error."""

    prediction = serializers.IntegerField(source="pk")
    status = PredictionStatusField()
    poll = serializers.CharField(help_text="This prediction's path.")
    task = serializers.CharField()
    task_id = serializers.IntegerField()
    output_width = serializers.IntegerField()
    labels = serializers.ListField(child=serializers.CharField(), allow_null=True)
    outputs = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField()),
        allow_null=True,
        help_text="When succeeded: the head's outputs, one row of output_width numbers per input row; else null.",
    )
    error = serializers.CharField(allow_null=True, help_text="When failed: what went wrong in the worker; else null.")
    runtime = serializers.ChoiceField(
        choices=RUNTIMES, allow_null=True, help_text="When succeeded: which runtime answered; else null."
    )
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)


class WaitField(serializers.FloatField):
    """Seconds a predict request may wait for its answer: a finite number in [0, MAX_WAIT_SECONDS]."""

    def __init__(self, **kwargs):
        help_text = (
            f"Seconds to wait for the worker's answer (default {DEFAULT_WAIT_SECONDS:g}, at most "
            f"{MAX_WAIT_SECONDS:g}). Answered in time: 200 with the outputs; else 202 with a prediction id "
            "to poll. 0 answers 202 at once."
        )
        super().__init__(required=False, min_value=0, max_value=MAX_WAIT_SECONDS, help_text=help_text, **kwargs)

    def to_internal_value(self, data):
        try:
            if isinstance(data, bool):
                raise TypeError
            value = float(data)
        except (TypeError, ValueError, OverflowError):
            value = math.nan
        if not (math.isfinite(value) and 0 <= value <= MAX_WAIT_SECONDS):
            shown = repr(data) if len(repr(data)) <= 40 else repr(data)[:37] + "..."
            raise serializers.ValidationError(
                f"must be a number of seconds from 0 to {MAX_WAIT_SECONDS:g}; received {shown}. Leave it out "
                f"to wait up to {DEFAULT_WAIT_SECONDS:g} s, or send 0 to get a prediction id to poll at once."
            )
        return value


def prediction_poll_path(prediction: Prediction) -> str:
    """Return the API path where a prediction can be polled."""
    return reverse("api:assembly-prediction", kwargs={"pk": prediction.assembly_id, "pid": prediction.pk})


def _head_entry(assembly: Assembly, task_id: int) -> dict:
    return next(e for e in assembly.manifest["heads"] if e["task_id"] == task_id)


class AssemblyListCreateApi(APIView):
    throttle_scope = "assemblies"  # POST counted per user: settings.MODELHUB_THROTTLE_RATES

    class InputSerializer(serializers.Serializer):
        team = serializers.CharField()
        backbone = serializers.IntegerField()
        heads = serializers.ListField(child=serializers.IntegerField(), required=False, allow_null=True)
        alias = serializers.CharField(
            required=False,
            max_length=63,
            help_text="Instead of 'heads': take each task's head that this alias (e.g. 'champion') points to on the "
            "backbone. The assembly's resolved_from records the alias and the versions.",
        )
        name = serializers.CharField(required=False, allow_blank=True, default="", max_length=100)
        task_signatures = serializers.BooleanField(
            required=False,
            default=False,
            help_text="Also add one signature per task slug. Off by default: serving_default(inputs, task_id) and "
            "serving_by_task(inputs, task) serve every task, and each per-task signature adds ~62 KB and ~0.4 s "
            "of build per task (MobileNetV2).",
        )

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
            ),
            OpenApiExample("By alias", value={"team": "vision", "backbone": 1, "alias": "champion"}, request_only=True),
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
            task_signatures=values["task_signatures"],
            alias=values.get("alias"),
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
    """Try an assembly: {"task": slug | "task_id": n, "inputs": ..., "wait": seconds} -> {"outputs": ...}.

    `inputs` follows the manifest's backbone inputs: a nested list for a single input (numbers,
    or strings for a text model), an object by input name for several inputs. One example
    without the batch axis, or up to 256 rows. The request waits at most `wait` seconds (body or
    query string; default 5, at most 30) for a worker's answer, then answers 202 with the
    prediction's id to poll at GET /api/assemblies/{id}/predictions/{pid}/.
    """

    throttle_scope = "predict"  # POST counted per user: settings.MODELHUB_THROTTLE_RATES

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
        wait = WaitField()

        def validate(self, attrs):
            if ("task" in attrs) == ("task_id" in attrs):
                raise serializers.ValidationError("Give exactly one of 'task' (a slug) or 'task_id' (a number).")
            return attrs

        class Meta:
            ref_name = "Predict"

    class QuerySerializer(serializers.Serializer):
        wait = WaitField()

    @extend_schema(
        request=InputSerializer,
        parameters=[QuerySerializer],
        examples=[
            OpenApiExample("One row", value={"task": "sentiment", "inputs": [[0.1, 0.2, 0.3]]}, request_only=True),
            OpenApiExample(
                "Do not wait", value={"task": "sentiment", "inputs": [[0.1, 0.2, 0.3]], "wait": 0}, request_only=True
            ),
        ],
        responses={
            200: OpenApiResponse(PredictionOutputSerializer, description="The worker answered within `wait` seconds."),
            202: OpenApiResponse(
                PredictionPendingSerializer,
                description="No answer within `wait` seconds: poll the `poll` path (the prediction goes on).",
            ),
            400: error_response("The worker could not run the prediction (code prediction_failed)."),
            409: error_response("The assembly is not ready: predictions need status 'ready'."),
        },
    )
    def post(self, request, pk: int):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        if "wait" in values and "wait" in query.validated_data:
            message = "Give 'wait' once, in the body or in the query string, not in both."
            raise ValidationError(f"wait: {message}", detail={"wait": [message]})
        wait = values.get("wait", query.validated_data.get("wait", DEFAULT_WAIT_SECONDS))
        assembly = assembly_get(user=request.user, pk=pk)
        prediction = prediction_run_and_wait(
            assembly=assembly,
            user=request.user,
            task=values.get("task"),
            task_id=values.get("task_id"),
            inputs=values["inputs"],
            wait=wait,
        )
        poll = prediction_poll_path(prediction)
        if not prediction_is_finished(prediction):
            return Response(
                {"prediction": prediction.pk, "status": prediction.status, "poll": poll},
                status=status.HTTP_202_ACCEPTED,
            )
        if prediction.status != prediction.Status.SUCCEEDED:
            raise ApplicationError(
                f"The prediction failed in the worker: {prediction.error}",
                code="prediction_failed",
                detail={"prediction": prediction.pk, "poll": poll},
            )
        entry = _head_entry(assembly, prediction.task_id)
        return Response(
            {
                "outputs": prediction.outputs,
                "task": entry["task"],
                "task_id": entry["task_id"],
                "output_width": entry["output_width"],
                "labels": entry["labels"],
                "prediction": prediction.pk,
                "status": prediction.status,
                "runtime": prediction.runtime or "tensorflow",
            }
        )


class AssemblyPredictionDetailApi(APIView):
    """A trial prediction of an assembly, polled after POST .../predict/ answered 202."""

    @extend_schema(responses=PredictionDetailSerializer)
    def get(self, request, pk: int, pid: int):
        prediction = prediction_get(user=request.user, assembly_pk=pk, pk=pid)
        entry = _head_entry(prediction.assembly, prediction.task_id)
        succeeded = prediction.status == Prediction.Status.SUCCEEDED
        body = {
            "pk": prediction.pk,
            "status": prediction.status,
            "poll": prediction_poll_path(prediction),
            "task": entry["task"],
            "task_id": entry["task_id"],
            "output_width": entry["output_width"],
            "labels": entry["labels"],
            "outputs": prediction.outputs if succeeded else None,
            "error": prediction.error if prediction.status == Prediction.Status.FAILED else None,
            "runtime": (prediction.runtime or "tensorflow") if succeeded else None,
            "created_at": prediction.created_at,
            "finished_at": prediction.finished_at,
        }
        return Response(PredictionDetailSerializer(body).data)

