"""The MLflow Model Registry face of ModelHub: the part of /api/2.0/mlflow/ an unmodified MlflowClient needs."""

from django.apps import AppConfig


class MlflowApiConfig(AppConfig):
    name = "mlflow_api"
    label = "mlflow_api"
    verbose_name = "ModelHub as an MLflow Model Registry"
