"""Django app config of the Prometheus metrics at GET /metrics (no models: it counts and reads)."""

from django.apps import AppConfig


class MetricsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "metrics"
