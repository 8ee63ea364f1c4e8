"""Open Inference Protocol v2 (KServe, Triton) over HTTP: health, server and model metadata, model ready, infer.

Paths are the protocol's (``/v2/...``). A model is ``{team}.{backbone name}``, a version an
assembly id (inference.selectors). Inputs are the backbone's inputs by name plus ``task_id``
(INT32) or ``task`` (BYTES slugs); outputs are ``outputs`` and ``output_width``, as the
SavedModel's serving_default gives them. The work is a trial prediction (inference.services).
Errors are ``{"error": "..."}``: 400 bad request or model not ready, 401, 404 unknown model or
version, 429, 503 with Retry-After when no worker answered within MODELHUB_PREDICT_MAX_WAIT.
"""

import numpy as np
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny

from assemblies.inputs import TASK_ID_NAME, manifest_inputs
from assemblies.models import Assembly
from core.errors import ValidationError
from core.services import health_report
from inference.base import ProtocolApi, json_response, protocol_error
from inference.oip_codec import HEADER_LENGTH, TensorError, datatype_of, encode_response, parse_request
from inference.selectors import model_assemblies, model_ready_versions, model_version_get
from inference.services import inference_run

TASK_NAME = "task"
OUTPUTS = ("outputs", "output_width")
INTEGER_TYPES = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
SERVER_NAME = "modelhub"
SERVER_VERSION = "1.0.0"
EXTENSIONS = ["binary_tensor_data"]


class OipTensorMetadataSerializer(serializers.Serializer):
    name = serializers.CharField()
    datatype = serializers.CharField(help_text="FP32, INT32, BYTES, ...")
    shape = serializers.ListField(child=serializers.IntegerField(), help_text="-1: any size (the batch).")


class OipModelMetadataSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="{team}.{backbone name}")
    versions = serializers.ListField(child=serializers.CharField(), help_text="Ready assembly ids, newest first.")
    platform = serializers.CharField()
    inputs = OipTensorMetadataSerializer(many=True)
    outputs = OipTensorMetadataSerializer(many=True)


class OipServerMetadataSerializer(serializers.Serializer):
    name = serializers.CharField()
    version = serializers.CharField()
    extensions = serializers.ListField(child=serializers.CharField())


class OipInferTensorSerializer(serializers.Serializer):
    name = serializers.CharField()
    shape = serializers.ListField(child=serializers.IntegerField(min_value=0))
    datatype = serializers.CharField()
    parameters = serializers.DictField(required=False)
    data = serializers.ListField(child=serializers.JSONField(), required=False)


class OipInferRequestedOutputSerializer(serializers.Serializer):
    name = serializers.ChoiceField(choices=OUTPUTS)
    parameters = serializers.DictField(required=False)


class OipInferRequestSerializer(serializers.Serializer):
    id = serializers.CharField(required=False)
    parameters = serializers.DictField(required=False)
    inputs = OipInferTensorSerializer(many=True)
    outputs = OipInferRequestedOutputSerializer(many=True, required=False)


class OipInferResponseSerializer(serializers.Serializer):
    model_name = serializers.CharField()
    model_version = serializers.CharField()
    id = serializers.CharField(required=False)
    outputs = OipInferTensorSerializer(many=True)


UNKNOWN_MODEL = protocol_error("Unknown model or version (or not one of your teams').")
NOT_READY = protocol_error("The version is not ready (building, verifying or failed), or the request is malformed.")
EMPTY_OK = OpenApiResponse(description="True (empty body).")
EMPTY_FALSE = OpenApiResponse(description="False (empty body).")


def model_metadata(name: str, assembly: Assembly, versions: list[str]) -> dict:
    """Return the OIP metadata of a model served by ``assembly``."""
    inputs = [
        {
            "name": spec["name"],
            "datatype": datatype_of(spec["dtype"]),
            "shape": [-1 if d is None else d for d in spec["shape"]],
        }
        for spec in manifest_inputs(assembly.manifest)
    ]
    max_width = int(assembly.manifest.get("serving", {}).get("max_width") or 0)
    return {
        "name": name,
        "versions": versions,
        "platform": "tensorflow_savedmodel",
        "inputs": [*inputs, {"name": TASK_ID_NAME, "datatype": "INT32", "shape": [-1]}],
        "outputs": [
            {"name": "outputs", "datatype": "FP32", "shape": [-1, max_width]},
            {"name": "output_width", "datatype": "INT32", "shape": [-1]},
        ],
    }


class OipServerMetadataApi(ProtocolApi):
    """GET /v2: the server's name, version and protocol extensions."""

    permission_classes = [AllowAny]

    @extend_schema(responses={200: OipServerMetadataSerializer})
    def get(self, request):
        return json_response({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS})


class OipLiveApi(ProtocolApi):
    """GET /v2/health/live: 200 while the web process answers (a liveness probe; no token needed)."""

    permission_classes = [AllowAny]

    @extend_schema(responses={200: EMPTY_OK})
    def get(self, request):
        return HttpResponse(status=200)


class OipReadyApi(ProtocolApi):
    """GET /v2/health/ready: 200 when the database, broker, storage and a worker answer; else 400."""

    permission_classes = [AllowAny]

    @extend_schema(responses={200: EMPTY_OK, 400: EMPTY_FALSE})
    def get(self, request):
        return HttpResponse(status=200 if health_report(details=False)["status"] == "ok" else 400)


class OipModelMetadataApi(ProtocolApi):
    """GET /v2/models/{name}[/versions/{version}]: the model's inputs and outputs with datatypes and shapes."""

    @extend_schema(responses={200: OipModelMetadataSerializer, 400: NOT_READY, 404: UNKNOWN_MODEL})
    def get(self, request, name: str, version: str | None = None):
        assembly = model_version_get(user=request.user, name=name, version=version)
        _, assemblies = model_assemblies(user=request.user, name=name)
        return json_response(model_metadata(name, assembly, model_ready_versions(assemblies=assemblies)))


class OipModelReadyApi(ProtocolApi):
    """GET /v2/models/{name}[/versions/{version}]/ready: 200 when that version can serve, 400 when not yet."""

    @extend_schema(responses={200: EMPTY_OK, 400: NOT_READY, 404: UNKNOWN_MODEL})
    def get(self, request, name: str, version: str | None = None):
        model_version_get(user=request.user, name=name, version=version)
        return HttpResponse(status=200)


INFER_EXAMPLE = {
    "id": "42",
    "inputs": [
        {"name": "inputs", "shape": [2, 8], "datatype": "FP32", "data": [0.5] * 16},
        {"name": "task_id", "shape": [2], "datatype": "INT32", "data": [0, 1]},
    ],
}


class OipInferApi(ProtocolApi):
    """POST /v2/models/{name}[/versions/{version}]/infer: run the assembly on a batch, a task per row."""

    throttle_scope = "predict"  # counted with POST /api/assemblies/{id}/predict/

    @extend_schema(
        request=OipInferRequestSerializer,
        examples=[OpenApiExample("Two rows, two tasks", value=INFER_EXAMPLE, request_only=True)],
        responses={
            (200, "application/json"): OipInferResponseSerializer,
            (200, "application/octet-stream"): OpenApiResponse(
                bytes,
                description="Binary tensor extension: JSON of Inference-Header-Content-Length bytes, then the tensors.",
            ),
            400: protocol_error("A malformed request, inputs that do not fit the model, or a failure in the worker."),
            404: UNKNOWN_MODEL,
            503: protocol_error("No worker answered within MODELHUB_PREDICT_MAX_WAIT: try again after Retry-After."),
        },
    )
    def post(self, request, name: str, version: str | None = None):
        try:
            infer = parse_request(request.body, request.headers.get(HEADER_LENGTH))
        except TensorError as exc:
            raise ValidationError(str(exc)) from None
        # The requested outputs are checked before any work is queued.
        wanted = infer.outputs if infer.outputs is not None else list(OUTPUTS)
        unknown = [output[:80] for output in wanted if output not in OUTPUTS]
        if unknown:
            raise ValidationError(f"Unknown output(s) {unknown[:10]}: this model has {list(OUTPUTS)}.")
        assembly = model_version_get(user=request.user, name=name, version=version)
        inputs, task_ids, tasks = _model_inputs(assembly, infer)
        answer = inference_run(assembly=assembly, user=request.user, inputs=inputs, task_ids=task_ids, tasks=tasks)
        tensors = {"outputs": (answer.outputs, "FP32"), "output_width": (answer.output_width, "INT32")}
        document = {"model_name": name, "model_version": str(assembly.pk)}
        if infer.id is not None:
            document["id"] = infer.id
        body, header_length = encode_response(
            document, [(output, *tensors[output]) for output in wanted], infer.binary_outputs
        )
        if header_length is None:
            return HttpResponse(body, content_type="application/json")
        return HttpResponse(body, content_type="application/octet-stream", headers={HEADER_LENGTH: str(header_length)})


def _model_inputs(assembly: Assembly, infer) -> tuple:
    """Return (inputs as the trial predict takes them, task ids or None, task slugs or None)."""
    specs = manifest_inputs(assembly.manifest)
    names = [spec["name"] for spec in specs]
    expected = ", ".join(f"'{spec['name']}' {datatype_of(spec['dtype'])}" for spec in specs)
    expected += f", and '{TASK_ID_NAME}' INT32 (or '{TASK_NAME}' BYTES slugs)"
    given = set(infer.tensors)
    unknown = sorted(given - {*names, TASK_ID_NAME, TASK_NAME})
    missing = [name for name in names if name not in given]
    if unknown or missing:
        problems = [f"unknown input(s) {unknown}" if unknown else "", f"missing {missing}" if missing else ""]
        raise ValidationError(f"{' and '.join(p for p in problems if p).capitalize()}. Expected inputs: {expected}.")
    values = {}
    for spec in specs:
        datatype = datatype_of(spec["dtype"])
        if infer.datatypes[spec["name"]] != datatype:
            raise ValidationError(
                f"Input '{spec['name']}' is {datatype}; received {infer.datatypes[spec['name']]}. "
                f"Send it as {datatype} (tritonclient: InferInput('{spec['name']}', shape, '{datatype}'))."
            )
        values[spec["name"]] = infer.tensors[spec["name"]].tolist()
    task_ids = tasks = None
    if TASK_ID_NAME in given and TASK_NAME in given:
        raise ValidationError(f"Give '{TASK_ID_NAME}' or '{TASK_NAME}', not both.")
    if TASK_ID_NAME in given:
        if infer.datatypes[TASK_ID_NAME] not in INTEGER_TYPES:
            raise ValidationError(f"'{TASK_ID_NAME}' is INT32; received {infer.datatypes[TASK_ID_NAME]}.")
        task_ids = np.asarray(infer.tensors[TASK_ID_NAME]).reshape(-1).tolist()
    elif TASK_NAME in given:
        if infer.datatypes[TASK_NAME] != "BYTES":
            raise ValidationError(f"'{TASK_NAME}' holds task slugs as BYTES; received {infer.datatypes[TASK_NAME]}.")
        tasks = np.asarray(infer.tensors[TASK_NAME], dtype=object).reshape(-1).tolist()
    else:
        raise ValidationError(f"Give each row's task: '{TASK_ID_NAME}' INT32 [rows] or '{TASK_NAME}' BYTES [rows].")
    inputs = values if len(specs) > 1 else values[names[0]]
    return inputs, task_ids, tasks
