from django.urls import path

from dashboard import views

app_name = "dashboard"

urlpatterns = [
    path("team/", views.team, name="team"),
    path("team/switch/", views.team_switch, name="team_switch"),
    path("account/tokens/", views.api_tokens, name="api_tokens"),
    path("account/tokens/<int:pk>/revoke/", views.api_token_revoke_view, name="api_token_revoke"),
]
