"""REST endpoints for the exports of an assembly (ONNX, LiteRT): request (or find), list, detail, download.

A worker builds each export and verifies it task by task against the SavedModel
(assemblies.work.exporting); these views read the request through assemblies.specs.ExportSpec
and call assemblies.services.assembly_export_create.
"""

from django.urls import reverse
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from artifacts.downloads import blob_download_response
from assemblies.models import AssemblyExport
from assemblies.selectors import assembly_get, export_get, export_list
from assemblies.services import assembly_export_create
from assemblies.specs import DEFAULT_QUANTIZATION, FORMATS, QUANTIZATIONS, ExportSpec
from core.api import paginated_response
from core.errors import ConflictError
from core.schema import error_response


class ExportOutputSerializer(serializers.ModelSerializer):
    assembly = serializers.IntegerField(source="assembly_id")
    sha256 = serializers.CharField(source="blob.sha256", default=None, allow_null=True)
    report = serializers.JSONField(
        help_text="The verification against the SavedModel once ready: format, quantization, size_bytes, runtime, "
        "rtol, max_abs_diff, passed, only_present_tasks, notes, tasks [{task_id, task, max_abs_diff, "
        "argmax_agreement}], dataset (when one was named: {id, name, split, split_rows, rows, tasks [{task, rows, "
        "argmax_agreement, max_abs_diff, accuracy_saved_model?, accuracy_export?}]})."
    )
    dataset = serializers.IntegerField(
        source="dataset_id",
        allow_null=True,
        help_text="The dataset named in the request (its argmax agreement is in report.dataset), or null.",
    )
    progress = serializers.JSONField(help_text='{"fraction": 0..1, "message": what the worker is doing}.')
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = AssemblyExport
        fields = [
            "id",
            "assembly",
            "format",
            "quantization",
            "dataset",
            "status",
            "progress",
            "error",
            "attempts",
            "report",
            "size_bytes",
            "sha256",
            "created_at",
            "started_at",
            "finished_at",
            "download_url",
        ]

    def get_download_url(self, obj) -> str | None:
        if obj.status != AssemblyExport.Status.READY or obj.blob_id is None:
            return None
        return reverse("api:assembly-export-download", kwargs={"pk": obj.assembly_id, "eid": obj.pk})


class ExportCreatedOutputSerializer(ExportOutputSerializer):
    existing = serializers.BooleanField(
        help_text="True (status 200) when this assembly, format and quantization were already asked for (a failed "
        "export is queued again); false (202) when a new export was queued."
    )

    class Meta(ExportOutputSerializer.Meta):
        fields = [*ExportOutputSerializer.Meta.fields, "existing"]


class AssemblyExportListCreateApi(APIView):
    """Exports of an assembly: POST {"format", "quantization"} queues one (a worker builds and verifies it)."""

    throttle_scope = "assemblies"  # POST counted per user, with the assembly builds

    class InputSerializer(serializers.Serializer):
        """Documents the body; ExportSpec reads it (one 400 naming every bad field)."""

        format = serializers.ChoiceField(choices=FORMATS, help_text="onnx (ONNX Runtime, Triton) or litert (phones).")
        quantization = serializers.ChoiceField(
            choices=QUANTIZATIONS,
            default=DEFAULT_QUANTIZATION,
            help_text="none must match the SavedModel within the assembly's tolerance; float16 and dynamic_int8 "
            "(both formats: ONNX through ONNX Runtime's quantizers, LiteRT through the TFLite converter) report "
            "per task the max abs diff and the argmax agreement.",
        )
        dataset = serializers.IntegerField(
            required=False,
            allow_null=True,
            min_value=1,
            help_text="Optional: the id of a ready dataset of the assembly's team that fits its backbone. The report "
            "then gives every task's argmax agreement (export vs SavedModel) on up to 256 of its rows (its "
            "validation split when it has one), and the accuracy for the tasks whose head was trained on it.",
        )

        class Meta:
            ref_name = "ExportCreate"

    @extend_schema(responses=ExportOutputSerializer(many=True))
    def get(self, request, pk: int):
        assembly = assembly_get(user=request.user, pk=pk)
        return paginated_response(request, export_list(assembly=assembly), ExportOutputSerializer, view=self)

    @extend_schema(
        request=InputSerializer,
        responses={
            202: ExportCreatedOutputSerializer,
            200: ExportCreatedOutputSerializer,
            400: error_response("A bad field, or a dataset that is not the team's, not ready or does not fit the "
                                "backbone (detail names each field and why)."),
            409: error_response("The assembly is not ready, or the export is running with another dataset "
                                "(detail.current_status names its status)."),
        },
        examples=[
            OpenApiExample("ONNX", value={"format": "onnx", "quantization": "none"}, request_only=True),
            OpenApiExample("LiteRT, int8 weights", value={"format": "litert", "quantization": "dynamic_int8"},
                           request_only=True),
            OpenApiExample("ONNX, int8 weights, checked on a dataset",
                           value={"format": "onnx", "quantization": "dynamic_int8", "dataset": 12}, request_only=True),
        ],
    )  # fmt: skip
    def post(self, request, pk: int):
        spec = ExportSpec.parse(request.data)
        assembly = assembly_get(user=request.user, pk=pk)
        export, existed = assembly_export_create(assembly=assembly, user=request.user, spec=spec)
        body = dict(ExportOutputSerializer(export).data, existing=existed)
        return Response(body, status=status.HTTP_200_OK if existed else status.HTTP_202_ACCEPTED)


class AssemblyExportDetailApi(APIView):
    @extend_schema(responses=ExportOutputSerializer)
    def get(self, request, pk: int, eid: int):
        return Response(ExportOutputSerializer(export_get(user=request.user, assembly_pk=pk, pk=eid)).data)


class AssemblyExportDownloadApi(APIView):
    @extend_schema(
        responses={
            (200, "application/octet-stream"): bytes,
            409: error_response("The export is not ready (detail.current_status names its status)."),
        }
    )
    def get(self, request, pk: int, eid: int):
        export = export_get(user=request.user, assembly_pk=pk, pk=eid)
        if export.status != AssemblyExport.Status.READY or export.blob is None:
            raise ConflictError(
                f"Export {eid} of assembly {pk} is '{export.status}', not ready: it can be downloaded once it is "
                "converted and verified.",
                detail={"current_status": export.status},
            )
        assembly = export.assembly
        name = assembly.name or f"assembly-{assembly.pk}"
        return blob_download_response(export.blob, filename=f"{name}-{export.quantization}.{export.file_extension}")
