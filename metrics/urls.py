"""URL map of the metrics app: GET /metrics (the path Prometheus scrapes by default)."""

from django.urls import path

from metrics.apis import MetricsApi

urlpatterns = [path("metrics", MetricsApi.as_view(), name="metrics")]
