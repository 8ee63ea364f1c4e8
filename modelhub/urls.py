"""URL map: dashboard at /, REST API under /api/, Django admin at /admin/."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from modelhub.artifacts import apis as artifact_apis
from modelhub.core import apis as core_apis
from modelhub.teams import apis as team_apis

api_patterns = [
    path("health/", core_apis.HealthApi.as_view(), name="health"),
    path("auth/token/", team_apis.TokenApi.as_view(), name="auth-token"),
    path("teams/", team_apis.TeamListApi.as_view(), name="team-list"),
    path("teams/<slug:slug>/members/", team_apis.TeamMembersApi.as_view(), name="team-members"),
    path("uploads/", artifact_apis.UploadListCreateApi.as_view(), name="upload-list"),
    path("uploads/<int:pk>/", artifact_apis.UploadDetailApi.as_view(), name="upload-detail"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
]

urlpatterns = [
    path("api/", include((api_patterns, "api"))),
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("modelhub.dashboard.urls")),
]

handler404 = "modelhub.core.views.not_found"
