"""URL map: dashboard at /, REST API under /api/, Django admin at /admin/."""

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.utils.csp import CSP
from django.views.decorators.csp import csp_override
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from artifacts import apis as artifact_apis
from assemblies import apis as assembly_apis
from assemblies import export_apis as assembly_export_apis
from backbones import apis as backbone_apis
from bundles import apis as bundle_apis
from core import apis as core_apis
from heads import apis as head_apis
from mlflow_api import urls as mlflow_urls
from releases import apis as release_apis
from teams import apis as team_apis
from teams.login_throttle import login_throttled
from training import apis as training_apis

api_patterns = [
    path("health/", core_apis.HealthApi.as_view(), name="health"),
    path("auth/token/", team_apis.TokenApi.as_view(), name="auth-token"),
    path("tokens/", team_apis.ApiTokenListCreateApi.as_view(), name="token-list"),
    path("tokens/<int:pk>/", team_apis.ApiTokenDetailApi.as_view(), name="token-detail"),
    path("teams/", team_apis.TeamListApi.as_view(), name="team-list"),
    path("teams/<slug:slug>/members/", team_apis.TeamMembersApi.as_view(), name="team-members"),
    path("uploads/", artifact_apis.UploadListCreateApi.as_view(), name="upload-list"),
    path("uploads/<int:pk>/", artifact_apis.UploadDetailApi.as_view(), name="upload-detail"),
    path("backbones/", backbone_apis.BackboneListCreateApi.as_view(), name="backbone-list"),
    path("backbones/<int:pk>/", backbone_apis.BackboneDetailApi.as_view(), name="backbone-detail"),
    path("backbones/<int:pk>/download/", backbone_apis.BackboneDownloadApi.as_view(), name="backbone-download"),
    path("backbones/<int:pk>/lineage/", training_apis.BackboneLineageApi.as_view(), name="backbone-lineage"),
    path("heads/", head_apis.HeadListCreateApi.as_view(), name="head-list"),
    path("heads/compare/", head_apis.HeadCompareApi.as_view(), name="head-compare"),
    path("heads/<int:pk>/", head_apis.HeadDetailApi.as_view(), name="head-detail"),
    path("heads/<int:pk>/evaluate/", training_apis.HeadEvaluateApi.as_view(), name="head-evaluate"),
    path("heads/<int:pk>/download/", head_apis.HeadDownloadApi.as_view(), name="head-download"),
    path("heads/<int:pk>/submit/", head_apis.HeadTransitionApi.as_view(action="submit"), name="head-submit"),
    path("heads/<int:pk>/approve/", head_apis.HeadTransitionApi.as_view(action="approve"), name="head-approve"),
    path(
        "heads/<int:pk>/request_changes/",
        head_apis.HeadTransitionApi.as_view(action="request_changes"),
        name="head-request-changes",
    ),
    path("heads/<int:pk>/archive/", head_apis.HeadTransitionApi.as_view(action="archive"), name="head-archive"),
    path("heads/<int:pk>/comments/", head_apis.HeadCommentsApi.as_view(), name="head-comments"),
    path("heads/<int:pk>/history/", head_apis.HeadHistoryApi.as_view(), name="head-history"),
    path("imports/", head_apis.ImportListCreateApi.as_view(), name="import-list"),
    path("imports/<int:pk>/", head_apis.ImportDetailApi.as_view(), name="import-detail"),
    path("assemblies/", assembly_apis.AssemblyListCreateApi.as_view(), name="assembly-list"),
    path("assemblies/<int:pk>/", assembly_apis.AssemblyDetailApi.as_view(), name="assembly-detail"),
    path("assemblies/<int:pk>/download/", assembly_apis.AssemblyDownloadApi.as_view(), name="assembly-download"),
    path("assemblies/<int:pk>/predict/", assembly_apis.AssemblyPredictApi.as_view(), name="assembly-predict"),
    path(
        "assemblies/<int:pk>/exports/",
        assembly_export_apis.AssemblyExportListCreateApi.as_view(),
        name="assembly-exports",
    ),
    path(
        "assemblies/<int:pk>/exports/<int:eid>/",
        assembly_export_apis.AssemblyExportDetailApi.as_view(),
        name="assembly-export",
    ),
    path(
        "assemblies/<int:pk>/exports/<int:eid>/download/",
        assembly_export_apis.AssemblyExportDownloadApi.as_view(),
        name="assembly-export-download",
    ),
    path(
        "assemblies/<int:pk>/predictions/<int:pid>/",
        assembly_apis.AssemblyPredictionDetailApi.as_view(),
        name="assembly-prediction",
    ),
    path("bundles/tfserving/models.config", bundle_apis.TfServingConfigApi.as_view(), name="bundle-tfserving-config"),
    path("aliases/", release_apis.AliasListCreateApi.as_view(), name="alias-list"),
    path("aliases/<int:pk>/", release_apis.AliasDetailApi.as_view(), name="alias-detail"),
    path("aliases/<int:pk>/history/", release_apis.AliasHistoryApi.as_view(), name="alias-history"),
    path("webhooks/", release_apis.WebhookListCreateApi.as_view(), name="webhook-list"),
    path("webhooks/<int:pk>/", release_apis.WebhookDetailApi.as_view(), name="webhook-detail"),
    path("webhooks/<int:pk>/deliveries/", release_apis.WebhookDeliveriesApi.as_view(), name="webhook-deliveries"),
    path("webhooks/<int:pk>/test/", release_apis.WebhookTestApi.as_view(), name="webhook-test"),
    path("datasets/", training_apis.DatasetListCreateApi.as_view(), name="dataset-list"),
    path("datasets/<int:pk>/", training_apis.DatasetDetailApi.as_view(), name="dataset-detail"),
    path("jobs/", training_apis.JobListCreateApi.as_view(), name="job-list"),
    path("jobs/<int:pk>/", training_apis.JobDetailApi.as_view(), name="job-detail"),
    path("jobs/<int:pk>/cancel/", training_apis.JobCancelApi.as_view(), name="job-cancel"),
    path("jobs/<int:pk>/retry/", training_apis.JobRetryApi.as_view(), name="job-retry"),
    path("forgetting-reports/<int:pk>/", training_apis.ReportDetailApi.as_view(), name="report-detail"),
    path(
        "forgetting-reports/<int:pk>/accept/",
        training_apis.ReportDecisionApi.as_view(accept=True),
        name="report-accept",
    ),
    path(
        "forgetting-reports/<int:pk>/reject/",
        training_apis.ReportDecisionApi.as_view(accept=False),
        name="report-reject",
    ),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its setup script as a file, so the docs work under the CSP.
    # Swagger UI sets inline styles from its script: styles (never scripts) are relaxed here only.
    path(
        "docs/",
        csp_override({**settings.SECURE_CSP, "style-src": [CSP.SELF, CSP.UNSAFE_INLINE]})(
            SpectacularSwaggerSplitView.as_view(url_name="api:schema")
        ),
        name="docs",
    ),
]

urlpatterns = [
    # MLflow's registry client (MlflowClient) and its artifact proxy: mlflow_api (README "MLflow").
    path("api/2.0/mlflow/", include(mlflow_urls.registry_patterns)),
    path("api/2.0/mlflow-artifacts/", include(mlflow_urls.artifact_patterns)),
    path("api/", include((api_patterns, "api"))),
    # Open Inference Protocol v2 (/v2/...) and TF Serving's REST shape (/v1/models/...): inference (README).
    path("", include("inference.urls")),
    # Prometheus: GET /metrics (README "Prometheus metrics").
    path("", include("metrics.urls")),
    # Both password forms refuse a blocked username or address (429) before checking the password.
    path("admin/login/", login_throttled(admin.site.login)),
    path("admin/", admin.site.urls),
    path("login/", login_throttled(auth_views.LoginView.as_view()), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("backbones/", include("backbones.urls")),
    path("assemblies/", include("assemblies.urls")),
    path("", include("training.urls")),
    path("", include("releases.urls")),
    path("", include("heads.urls")),
    path("", include("overview.urls")),
    path("", include("dashboard.urls")),
]

handler404 = "core.views.not_found"
