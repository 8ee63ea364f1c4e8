"""URL map of the MLflow face: /api/2.0/mlflow/... (registry) and /api/2.0/mlflow-artifacts/... (artifact proxy)."""

from django.urls import path, re_path

from mlflow_api import apis

registry_patterns = [
    path("registered-models/search", apis.RegisteredModelsSearchApi.as_view(), name="mlflow-registered-models-search"),
    path("registered-models/get", apis.RegisteredModelGetApi.as_view(), name="mlflow-registered-model-get"),
    path("registered-models/alias", apis.RegisteredModelAliasApi.as_view(), name="mlflow-registered-model-alias"),
    path("model-versions/search", apis.ModelVersionsSearchApi.as_view(), name="mlflow-model-versions-search"),
    path("model-versions/get", apis.ModelVersionGetApi.as_view(), name="mlflow-model-version-get"),
    path(
        "model-versions/get-download-uri",
        apis.ModelVersionDownloadUriApi.as_view(),
        name="mlflow-model-version-download-uri",
    ),
    re_path(r"^.*$", apis.EndpointNotFoundApi.as_view(), name="mlflow-endpoint-not-found"),
]

artifact_patterns = [
    path("artifacts", apis.ArtifactListApi.as_view(), name="mlflow-artifacts-list"),
    path("artifacts/<path:path>", apis.ArtifactDownloadApi.as_view(), name="mlflow-artifact-download"),
    re_path(r"^.*$", apis.EndpointNotFoundApi.as_view(), name="mlflow-artifacts-endpoint-not-found"),
]
