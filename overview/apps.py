"""Django app config of the Overview page (no models: it only reads other apps through their selectors)."""

from django.apps import AppConfig


class OverviewConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "overview"
