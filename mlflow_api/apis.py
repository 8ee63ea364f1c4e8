"""The part of MLflow's REST API (/api/2.0/mlflow/, /api/2.0/mlflow-artifacts/) an unmodified MlflowClient needs.

Read: search and get registered models (tasks) and model versions (head versions), a version by
alias, a version's download URI. Release: set and delete aliases (four eyes, by releases.services).
Artifacts: a version's ``model.keras`` (backbone, branch and head composed by a worker on first
request) and ``MLmodel``, listed and served through MLflow's artifact proxy paths. Errors have
MLflow's shape ``{"error_code", "message"}``; paths MLflow has and ModelHub does not answer
ENDPOINT_NOT_FOUND. Authenticate with ``MLFLOW_TRACKING_TOKEN`` (sent as ``Bearer``) or ``Token``.
"""

from django.http import HttpResponse
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions
from rest_framework.permissions import SAFE_METHODS
from rest_framework.response import Response
from rest_framework.views import APIView

from artifacts.downloads import blob_download_response
from core.errors import ApplicationError, NotFoundError, ValidationError
from core.exception_handler import DATABASE_RETRY_AFTER_SECONDS, database_unavailable
from core.throttling import throttle_count
from mlflow_api import entities
from mlflow_api.filters import max_results, page_offset, paged_lazily, parse_filter
from mlflow_api.models import FullModelArtifact
from mlflow_api.selectors import (
    INVALID,
    aliases_by_task,
    full_model_of,
    full_model_wait,
    model_version_by_alias,
    model_version_get,
    model_versions,
    registered_model_get,
    registered_model_list,
    registered_model_tasks,
)
from mlflow_api.services import (
    full_model_request,
    full_model_retry_at,
    registered_model_alias_delete,
    registered_model_alias_set,
)
from teams.authentication import ApiTokenAuthentication

# How long an artifact request waits for the worker's build before answering 503 (MLflow retries).
ARTIFACT_WAIT_SECONDS = 20
RETRY_AFTER_SECONDS = 3
MODEL_FILE, MLMODEL_FILE = "model.keras", "MLmodel"
CODES = {400: INVALID, 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "RESOURCE_DOES_NOT_EXIST"}
CODES.update({405: "ENDPOINT_NOT_FOUND", 409: "INVALID_STATE", 413: INVALID, 429: "REQUEST_LIMIT_EXCEEDED"})


class BearerTokenAuthentication(ApiTokenAuthentication):
    """A ModelHub API token sent as ``Authorization: Bearer <key>`` (what MLflow sends for MLFLOW_TRACKING_TOKEN)."""

    keyword = "Bearer"


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """OpenAPI: the same API tokens, sent as ``Authorization: Bearer <key>``."""

    target_class = BearerTokenAuthentication
    name = "mlflowBearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "A ModelHub API token (MLFLOW_TRACKING_TOKEN)."}


def mlflow_error(code: str, message: str, status: int, headers: dict | None = None) -> Response:
    return Response({"error_code": code, "message": message}, status=status, headers=headers)


def mlflow_exception_handler(exc: Exception, context: dict) -> Response:
    """Map every error to MLflow's shape, with MLflow's codes (never ModelHub's own envelope)."""
    if database_unavailable(exc):
        message = "The database is not answering right now; try again in a few seconds."
        return mlflow_error("TEMPORARILY_UNAVAILABLE", message, 503, {"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)})
    if isinstance(exc, ApplicationError):
        code = exc.code if exc.code and exc.code.isupper() else CODES.get(exc.status_code, INVALID)
        return mlflow_error(code, exc.message, exc.status_code)
    if isinstance(exc, exceptions.APIException):
        headers = {"Retry-After": str(int(exc.wait))} if isinstance(exc, exceptions.Throttled) and exc.wait else None
        status = exc.status_code
        return mlflow_error(CODES.get(status, "INTERNAL_ERROR"), str(exc.detail), status, headers)
    raise exc


class MlflowApi(APIView):
    """Base of every MLflow view: Bearer or Token auth, MLflow's error shape."""

    authentication_classes = [BearerTokenAuthentication, ApiTokenAuthentication]

    # A GET that does the work (a worker's build, a file of hundreds of MB) counts against this
    # throttle scope too; DRF's scoped throttle counts only unsafe methods (core.throttling).
    counted_read_scope: str | None = None

    def get_exception_handler(self):
        return mlflow_exception_handler

    def check_throttles(self, request):
        super().check_throttles(request)
        if self.counted_read_scope and request.method in SAFE_METHODS:
            throttle_count(request, scope=self.counted_read_scope, user=request.user)

    def param(self, name: str, *, required: bool = True) -> str:
        value = self.request.query_params.get(name)
        if value is None and isinstance(self.request.data, dict):
            value = self.request.data.get(name)
        if required and (value is None or str(value) == ""):
            raise ValidationError(f"Missing value for required parameter '{name}'.", code=INVALID)
        return "" if value is None else str(value)


ERRORS = {status: OpenApiTypes.OBJECT for status in (400, 401, 403, 404, 409, 503)}


def _schema(
    summary: str, params: list[str], method: str = "GET", responses: dict | None = None, operation_id: str | None = None
):
    where = OpenApiParameter.QUERY
    return extend_schema(
        tags=["MLflow registry"],
        operation_id=operation_id,
        summary=summary,
        parameters=[
            OpenApiParameter(name, str, where, required=name in ("name", "version", "alias")) for name in params
        ]
        if method in ("GET", "DELETE")
        else None,
        request=OpenApiTypes.OBJECT if method == "POST" else None,
        responses=responses or {200: OpenApiTypes.OBJECT, **ERRORS},
    )


def _versions_by_task(tasks) -> tuple[dict, dict]:
    heads: dict[int, list] = {}
    for head in model_versions(tasks=tasks):
        heads.setdefault(head.task_id, []).append(head)
    return heads, aliases_by_task(tasks=tasks)


def _version_body(head, aliases: list[tuple[str, object]]) -> dict:
    return entities.model_version(head, aliases=[name for name, target in aliases if target.pk == head.pk])


class RegisteredModelsSearchApi(MlflowApi):
    @_schema("Search registered models (tasks as `{team}.{task}`)", ["filter", "max_results", "page_token"])
    def get(self, request):
        match = parse_filter(self.param("filter", required=False))
        size = max_results(self.param("max_results", required=False), default=100, ceiling=1000)
        offset = page_offset(self.param("page_token", required=False))
        # `name = 'x'` narrows the query; the rest is matched on the model alone (its name and
        # tags), and versions are read only for the models of this page.
        models = registered_model_list(user=request.user, names=match.names)
        matched = (model for model in models if match(model.name, entities.model_tags(model)))
        page, token = paged_lazily(matched, offset=offset, size=size)
        heads, aliases = _versions_by_task([model.task for model in page])
        bodies = [
            entities.registered_model(model, heads=heads.get(model.task.pk, []), aliases=aliases.get(model.task.pk, []))
            for model in page
        ]
        return Response({"registered_models": bodies, **({"next_page_token": token} if token else {})})


class RegisteredModelGetApi(MlflowApi):
    @_schema("Get a registered model", ["name"])
    def get(self, request):
        model = registered_model_get(user=request.user, name=self.param("name"))
        heads, aliases = _versions_by_task([model.task])
        body = entities.registered_model(
            model, heads=heads.get(model.task.pk, []), aliases=aliases.get(model.task.pk, [])
        )
        return Response({"registered_model": body})


class ModelVersionsSearchApi(MlflowApi):
    @_schema("Search model versions (head versions)", ["filter", "max_results", "page_token"])
    def get(self, request):
        match = parse_filter(self.param("filter", required=False))
        size = max_results(self.param("max_results", required=False), default=1000, ceiling=1000)
        offset = page_offset(self.param("page_token", required=False))
        # A subquery of the user's tasks (narrowed by `name = 'x'`), never a list of ids; the
        # versions are read in order and built only until the page is full.
        tasks = registered_model_tasks(user=request.user, names=match.names)
        aliases = aliases_by_task(tasks=tasks)
        bodies = (_version_body(head, aliases.get(head.task_id, [])) for head in model_versions(tasks=tasks).iterator())
        matched = (body for body in bodies if match(body["name"], {t["key"]: t["value"] for t in body["tags"]}))
        page, token = paged_lazily(matched, offset=offset, size=size)
        return Response({"model_versions": page, **({"next_page_token": token} if token else {})})


class ModelVersionGetApi(MlflowApi):
    @_schema("Get a model version", ["name", "version"])
    def get(self, request):
        model = registered_model_get(user=request.user, name=self.param("name"))
        head = model_version_get(model=model, version=self.param("version"))
        return Response(
            {"model_version": _version_body(head, aliases_by_task(tasks=[model.task]).get(model.task.pk, []))}
        )


class ModelVersionDownloadUriApi(MlflowApi):
    counted_read_scope = "predict"  # queues a worker's build: counted with the other predict-scoped work

    @_schema("Where a model version's artifacts are (and start building its full model)", ["name", "version"])
    def get(self, request):
        model = registered_model_get(user=request.user, name=self.param("name"))
        head = model_version_get(model=model, version=self.param("version"))
        full_model_request(head=head, user=request.user)
        return Response({"artifact_uri": f"mlflow-artifacts:/{entities.artifact_path(model.name, head.version)}"})


class RegisteredModelAliasApi(MlflowApi):
    @_schema("Get the model version an alias points to", ["name", "alias"])
    def get(self, request):
        model = registered_model_get(user=request.user, name=self.param("name"))
        head = model_version_by_alias(model=model, alias=self.param("alias"))
        return Response(
            {"model_version": _version_body(head, aliases_by_task(tasks=[model.task]).get(model.task.pk, []))}
        )

    @_schema("Set or move an alias (reviewers and admins; never on a version you authored)", [], method="POST")
    def post(self, request):
        model = registered_model_get(user=request.user, name=self.param("name"))
        registered_model_alias_set(
            user=request.user, model=model, alias=self.param("alias"), version=self.param("version")
        )
        return Response({})

    @_schema("Delete an alias (reviewers and admins)", ["name", "alias"], method="DELETE")
    def delete(self, request):
        model = registered_model_get(user=request.user, name=self.param("name"))
        registered_model_alias_delete(user=request.user, model=model, alias=self.param("alias"))
        return Response({})


# --- Artifacts (the mlflow-artifacts proxy) --------------------------------------------------


def _artifact_target(user, path: str) -> tuple[object, str]:
    """Return (head version, file name or "") for an artifact path modelhub/<team>.<task>/<version>[/<file>]."""
    parts = [part for part in (path or "").strip("/").split("/") if part]
    if (
        len(parts) not in (3, 4)
        or parts[0] != entities.ARTIFACT_ROOT
        or (len(parts) == 4 and parts[3] not in (MODEL_FILE, MLMODEL_FILE))
    ):
        raise NotFoundError(
            f"No artifact at {path!r}: ModelHub serves modelhub/<team>.<task>/<version>/"
            f"{{{MODEL_FILE},{MLMODEL_FILE}}} (get-download-uri gives the folder).",
            code="RESOURCE_DOES_NOT_EXIST",
        )
    model = registered_model_get(user=user, name=parts[1])
    return model_version_get(model=model, version=parts[2]), parts[3] if len(parts) == 4 else ""


def _ready_full_model(head) -> FullModelArtifact | Response:
    """The built full model of `head`, or the MLflow answer to give while it builds or after it failed."""
    artifact = full_model_of(head=head) or full_model_request(head=head)
    artifact = full_model_wait(artifact=artifact, seconds=ARTIFACT_WAIT_SECONDS)
    if artifact.status == FullModelArtifact.Status.READY:
        return artifact
    if artifact.status == FullModelArtifact.Status.FAILED:
        message = f"Building the full model of {head.task.slug} v{head.version} failed: {artifact.error}"
        retry = full_model_retry_at(artifact=artifact)
        when = f"after {retry:%Y-%m-%d %H:%M:%S} UTC" if retry is not None else "now"
        return mlflow_error("INVALID_STATE", f"{message} Ask get-download-uri again to retry ({when}).", 409)
    message = f"The full model of {head.task.slug} v{head.version} is still being built by a worker; retry shortly."
    return mlflow_error("TEMPORARILY_UNAVAILABLE", message, 503, {"Retry-After": str(RETRY_AFTER_SECONDS)})


class ArtifactListApi(MlflowApi):
    counted_read_scope = "predict"  # waits for (or starts) a worker's build, then serves a large file

    @_schema("List a model version's artifacts (model.keras, MLmodel)", ["path"], operation_id="mlflow_artifacts_list")
    def get(self, request):
        head, file_name = _artifact_target(request.user, self.param("path"))
        if file_name:
            return Response({"files": []})  # a file, not a folder: MLflow lists nothing
        artifact = _ready_full_model(head)
        if isinstance(artifact, Response):
            return artifact
        files = [
            {"path": MLMODEL_FILE, "is_dir": False, "file_size": len(artifact.mlmodel.encode())},
            {"path": MODEL_FILE, "is_dir": False, "file_size": artifact.blob.size_bytes},
        ]
        return Response({"files": files})


class ArtifactDownloadApi(MlflowApi):
    counted_read_scope = "predict"  # waits for (or starts) a worker's build, then serves a large file

    @_schema(
        "Download one artifact of a model version",
        [],
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY, **ERRORS},
        operation_id="mlflow_artifacts_download",
    )
    def get(self, request, path: str):
        head, file_name = _artifact_target(request.user, path)
        if not file_name:
            raise ValidationError(
                f"{path!r} is a folder: download {MODEL_FILE} or {MLMODEL_FILE} inside it.", code=INVALID
            )
        artifact = _ready_full_model(head)
        if isinstance(artifact, Response):
            return artifact
        if file_name == MLMODEL_FILE:
            return HttpResponse(artifact.mlmodel, content_type="text/yaml; charset=utf-8")
        return blob_download_response(artifact.blob, filename=MODEL_FILE)


@extend_schema(exclude=True)
class EndpointNotFoundApi(MlflowApi):
    """Every other path under /api/2.0/mlflow/: ModelHub answers a registry subset only."""

    permission_classes = []

    def _answer(self, request, *args, **kwargs):
        message = (
            f"{request.method} {request.path} is not part of ModelHub's MLflow registry, which answers "
            "registered-models search/get/alias, model-versions search/get/get-download-uri and the "
            "mlflow-artifacts proxy."
        )
        return mlflow_error("ENDPOINT_NOT_FOUND", message, 404)

    get = post = put = patch = delete = _answer
