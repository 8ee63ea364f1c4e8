"""URL of the Overview page, the dashboard's home (/)."""

from django.urls import path

from overview import views

app_name = "overview"

urlpatterns = [
    path("", views.home, name="home"),
]
