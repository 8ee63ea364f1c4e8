"""TensorFlow Serving's REST API shape on the trial path: predict, model status and model metadata.

``POST /v1/models/{name}[/versions/{v} | /labels/{alias}]:predict`` takes ``instances`` (row
format) or ``inputs`` (columnar) and a ``signature_name`` (serving_default(inputs, task_id),
serving_by_task(inputs, task), or a task's own signature when the assembly has them) and answers
``predictions`` or ``outputs`` as TF Serving does, so that a body that works here works unchanged
against TF Serving serving the same SavedModel. Strings may be ``{"b64": ...}``. Errors are
``{"error": "..."}``: 400 bad request, 404 unknown model, version or label, 503 with Retry-After.
"""

import base64
import binascii

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers

from assemblies.inputs import TASK_ID_NAME, manifest_inputs
from assemblies.models import Assembly
from core.errors import ValidationError
from core.ids import parse_id
from inference.base import ProtocolApi, json_response, protocol_error
from inference.selectors import model_assemblies, model_version_get
from inference.services import inference_run

TASK_NAME = "task"
DEFAULT_SIGNATURE = "serving_default"
BY_TASK_SIGNATURE = "serving_by_task"
PREDICT_METHOD = "tensorflow/serving/predict"
INIT_OP = "__saved_model_init_op"
DT_TYPES = {
    "float16": "DT_HALF",
    "float32": "DT_FLOAT",
    "float64": "DT_DOUBLE",
    "bfloat16": "DT_BFLOAT16",
    "int8": "DT_INT8",
    "int16": "DT_INT16",
    "int32": "DT_INT32",
    "int64": "DT_INT64",
    "uint8": "DT_UINT8",
    "uint16": "DT_UINT16",
    "uint32": "DT_UINT32",
    "uint64": "DT_UINT64",
    "bool": "DT_BOOL",
    "string": "DT_STRING",
}
STATES = {Assembly.Status.READY: "AVAILABLE", Assembly.Status.FAILED: "END"}


class TfsPredictRequestSerializer(serializers.Serializer):
    signature_name = serializers.CharField(required=False, help_text="serving_default (default) or serving_by_task.")
    instances = serializers.JSONField(required=False, help_text="Row format: one object per row, by input name.")
    inputs = serializers.JSONField(required=False, help_text="Columnar format: an object by input name.")


class TfsPredictResponseSerializer(serializers.Serializer):
    predictions = serializers.JSONField(required=False, help_text="Row-format answer: one object per row.")
    outputs = serializers.JSONField(required=False, help_text="Columnar answer: an object by output name.")


class TfsModelStatusSerializer(serializers.Serializer):
    model_version_status = serializers.ListField(child=serializers.DictField())


class TfsModelMetadataSerializer(serializers.Serializer):
    model_spec = serializers.DictField()
    metadata = serializers.DictField()


UNKNOWN = protocol_error("Servable not found: unknown model, version or label (or not one of your teams').")


def _tensor_info(name: str, dtype: str, shape: list, tensor_name: str) -> dict:
    dims = [{"size": str(-1 if size is None else size), "name": ""} for size in shape]
    return {
        name: {
            "dtype": DT_TYPES.get(dtype, "DT_FLOAT"),
            "tensor_shape": {"dim": dims, "unknown_rank": False},
            "name": tensor_name,
        }
    }


def signature_defs(assembly: Assembly) -> dict:
    """Return the assembly's SavedModel signature defs as TF Serving's metadata JSON shows them.

    Names, dtypes and shapes are the SavedModel's (tests/protocols/test_tfserving_rest.py reads a
    real one); the output tensor names ("StatefulPartitionedCall:N") are nominal: the saved graph
    numbers its calls in an order the manifest does not record.
    """
    specs = manifest_inputs(assembly.manifest)
    max_width = int(assembly.manifest.get("serving", {}).get("max_width") or 0)
    signatures = {}
    for signature, task_input, task_dtype in (
        (DEFAULT_SIGNATURE, TASK_ID_NAME, "int32"),
        (BY_TASK_SIGNATURE, TASK_NAME, "string"),
    ):
        inputs = {}
        for spec in [*specs, {"name": task_input, "dtype": task_dtype, "shape": [None]}]:
            inputs.update(_tensor_info(spec["name"], spec["dtype"], spec["shape"], f"{signature}_{spec['name']}:0"))
        outputs = {
            **_tensor_info("output_width", "int32", [None], "StatefulPartitionedCall:0"),
            **_tensor_info("outputs", "float32", [None, max_width], "StatefulPartitionedCall:1"),
        }
        signatures[signature] = {"inputs": inputs, "outputs": outputs, "method_name": PREDICT_METHOD, "defaults": {}}
    for entry in (
        assembly.manifest.get("heads", []) if assembly.manifest.get("serving", {}).get("per_head_signatures") else []
    ):
        inputs = {}
        for spec in specs:
            inputs.update(_tensor_info(spec["name"], spec["dtype"], spec["shape"], f"{entry['task']}_{spec['name']}:0"))
        outputs = _tensor_info("outputs", "float32", [None, entry["output_width"]], "StatefulPartitionedCall:0")
        signatures[entry["task"]] = {
            "inputs": inputs,
            "outputs": outputs,
            "method_name": PREDICT_METHOD,
            "defaults": {},
        }
    init = {"dtype": "DT_INVALID", "tensor_shape": {"dim": [], "unknown_rank": True}, "name": "NoOp"}
    signatures[INIT_OP] = {"inputs": {}, "outputs": {INIT_OP: init}, "method_name": "", "defaults": {}}
    return signatures


class TfsModelStatusApi(ProtocolApi):
    """GET /v1/models/{name}[/versions/{v} | /labels/{alias}]: each version's state, as GetModelStatus."""

    @extend_schema(responses={200: TfsModelStatusSerializer, 404: UNKNOWN})
    def get(self, request, name: str, version: str | None = None, label: str | None = None):
        if version is not None or label is not None:
            _, assemblies = model_assemblies(user=request.user, name=name)
            if version is not None and not assemblies.filter(pk=parse_id(version) or 0).exists():
                model_version_get(user=request.user, name=name, version=version)  # raises the not-found answer
            chosen = (
                [assemblies.get(pk=parse_id(version))]
                if version is not None
                else [model_version_get(user=request.user, name=name, version=None, label=label)]
            )
        else:
            _, assemblies = model_assemblies(user=request.user, name=name)
            chosen = list(assemblies)
        return json_response({"model_version_status": [_version_status(assembly) for assembly in chosen]})


def _version_status(assembly: Assembly) -> dict:
    failed = assembly.status == Assembly.Status.FAILED
    return {
        "version": str(assembly.pk),
        "state": STATES.get(assembly.status, "LOADING"),
        "status": {"error_code": "UNKNOWN" if failed else "OK", "error_message": assembly.error if failed else ""},
    }


class TfsModelMetadataApi(ProtocolApi):
    """GET /v1/models/{name}[/versions/{v} | /labels/{alias}]/metadata: the signature defs, as GetModelMetadata."""

    @extend_schema(
        responses={200: TfsModelMetadataSerializer, 400: protocol_error("That version is not ready."), 404: UNKNOWN}
    )
    def get(self, request, name: str, version: str | None = None, label: str | None = None):
        assembly = model_version_get(user=request.user, name=name, version=version, label=label)
        return json_response(
            {
                "model_spec": {"name": name, "signature_name": "", "version": str(assembly.pk)},
                "metadata": {"signature_def": {"signature_def": signature_defs(assembly)}},
            }
        )


PREDICT_EXAMPLES = [
    OpenApiExample(
        "Row format",
        value={"signature_name": "serving_default", "instances": [{"inputs": [0.5] * 8, "task_id": 0}]},
        request_only=True,
    ),
    OpenApiExample(
        "Columnar, by task slug",
        value={"signature_name": "serving_by_task", "inputs": {"inputs": [[0.5] * 8], "task": ["sentiment"]}},
        request_only=True,
    ),
]


class TfsPredictApi(ProtocolApi):
    """POST /v1/models/{name}[/versions/{v} | /labels/{alias}]:predict: run the assembly, as TF Serving's Predict."""

    throttle_scope = "predict"  # counted with POST /api/assemblies/{id}/predict/

    @extend_schema(
        request=TfsPredictRequestSerializer,
        examples=PREDICT_EXAMPLES,
        responses={
            200: TfsPredictResponseSerializer,
            400: protocol_error("A malformed body, inputs that do not fit the signature, or a failure in the worker."),
            404: UNKNOWN,
            503: protocol_error("No worker answered within MODELHUB_PREDICT_MAX_WAIT: try again after Retry-After."),
        },
    )
    def post(self, request, name: str, version: str | None = None, label: str | None = None):
        body = request.data
        if not isinstance(body, dict):
            raise ValidationError('The body must be a JSON object: {"instances": [...]} or {"inputs": {...}}.')
        assembly = model_version_get(user=request.user, name=name, version=version, label=label)
        signature = body.get("signature_name") or DEFAULT_SIGNATURE
        specs = manifest_inputs(assembly.manifest)
        task_input, fixed_task = _signature_task(assembly, signature)
        names = [spec["name"] for spec in specs] + ([task_input] if task_input else [])
        strings = {spec["name"] for spec in specs if spec["dtype"] == "string"} | {TASK_NAME}
        if ("instances" in body) == ("inputs" in body):
            raise ValidationError("Give 'instances' (row format) or 'inputs' (columnar format), exactly one of them.")
        row_format = "instances" in body
        columns = _columns(body["instances"], names) if row_format else _columnar(body["inputs"], names)
        columns = {key: _decode_b64(value) if key in strings else value for key, value in columns.items()}
        inputs = {spec["name"]: columns[spec["name"]] for spec in specs}
        inputs = inputs if len(specs) > 1 else inputs[specs[0]["name"]]
        task_ids = tasks = None
        if task_input == TASK_ID_NAME:
            task_ids = _flat(columns[TASK_ID_NAME], TASK_ID_NAME)
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in task_ids):
                raise ValidationError(f"'{TASK_ID_NAME}' holds integers (DT_INT32), one per row.")
        elif task_input == TASK_NAME:
            tasks = _flat(columns[TASK_NAME], TASK_NAME)
        answer = inference_run(
            assembly=assembly,
            user=request.user,
            inputs=inputs,
            task_ids=task_ids,
            tasks=tasks,
            task_id_for_all=fixed_task,
        )
        if fixed_task is not None:
            width = int(answer.output_width[0]) if len(answer.output_width) else 0
            single = answer.outputs[:, :width].tolist()
            return json_response({"predictions": single} if row_format else {"outputs": single})
        outputs, widths = answer.outputs.tolist(), answer.output_width.tolist()
        if row_format:
            return json_response(
                {"predictions": [{"output_width": w, "outputs": o} for o, w in zip(outputs, widths, strict=True)]}
            )
        return json_response({"outputs": {"output_width": widths, "outputs": outputs}})


def _signature_task(assembly: Assembly, signature: str) -> tuple[str | None, int | None]:
    """Return (the signature's task input, or None; the task a per-task signature fixes, or None)."""
    if signature == DEFAULT_SIGNATURE:
        return TASK_ID_NAME, None
    if signature == BY_TASK_SIGNATURE:
        return TASK_NAME, None
    if signature in (assembly.signatures or []):
        entry = next((e for e in assembly.manifest.get("heads", []) if e["task"] == signature), None)
        if entry is not None:
            return None, int(entry["task_id"])
    available = ", ".join(assembly.signatures or [DEFAULT_SIGNATURE, BY_TASK_SIGNATURE])
    raise ValidationError(f'Serving signature name: "{signature}" not found in signature def. Available: {available}.')


def _columns(instances, names: list[str]) -> dict:
    """Turn row-format instances into columns by input name."""
    if not isinstance(instances, list) or not instances:
        raise ValidationError("'instances' must be a non-empty list: one entry per row.")
    if len(names) == 1 and not all(isinstance(row, dict) for row in instances):
        return {names[0]: instances}
    columns = {name: [] for name in names}
    for index, row in enumerate(instances):
        if not isinstance(row, dict):
            raise ValidationError(
                f"instances[{index}] must be an object with the signature's inputs {names} (it has several), "
                f'e.g. {{"{names[0]}": ..., "{names[-1]}": ...}}.'
            )
        _check_names(row, names, f"instances[{index}]")
        for name in names:
            columns[name].append(row[name])
    return columns


def _columnar(inputs, names: list[str]) -> dict:
    if len(names) == 1 and not isinstance(inputs, dict):
        return {names[0]: inputs}
    if not isinstance(inputs, dict):
        raise ValidationError(f"'inputs' must be an object by input name: {names}.")
    _check_names(inputs, names, "'inputs'")
    return {name: inputs[name] for name in names}


def _check_names(given: dict, names: list[str], where: str) -> None:
    missing = [name for name in names if name not in given]
    unknown = sorted(str(name) for name in given if name not in names)
    if missing or unknown:
        raise ValidationError(
            f"{where} must hold exactly the signature's inputs {names}; missing {missing}, unknown {unknown}."
        )


def _decode_b64(value):
    """Replace every {"b64": ...} in a nested value by its decoded UTF-8 text (no recursion: any depth)."""
    root = [value]
    stack = [(root, 0)]
    while stack:
        container, index = stack.pop()
        item = container[index]
        if isinstance(item, list):
            copy = list(item)
            container[index] = copy
            stack.extend((copy, i) for i in range(len(copy)))
        elif isinstance(item, dict):
            container[index] = _b64_text(item)
    return root[0]


def _b64_text(value: dict) -> str:
    if set(value) != {"b64"} or not isinstance(value["b64"], str):
        raise ValidationError('A binary string is {"b64": "<base64>"}; received another object.')
    try:
        return base64.b64decode(value["b64"], validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ValidationError('A {"b64": ...} value is not base64 of UTF-8 text.') from None


def _flat(value, name: str) -> list:
    if not isinstance(value, list):
        return [value]
    flat = []
    for item in value:
        if isinstance(item, list):
            if len(item) != 1:
                raise ValidationError(f"'{name}' holds one value per row; received a row of {len(item)}.")
            item = item[0]
        flat.append(item)
    return flat
