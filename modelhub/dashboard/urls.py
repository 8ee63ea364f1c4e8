from django.urls import path

from modelhub.dashboard import views

app_name = "dashboard"

urlpatterns = [
    path("", views.home, name="home"),
    path("team/", views.team, name="team"),
    path("team/switch/", views.team_switch, name="team_switch"),
]
