"""Celery tasks of the MLflow face (mlflow.* routes to the default queue)."""

from modelhub.celery import app


@app.task(name="mlflow.build_full_model")
def build_full_model(artifact_id: int) -> None:
    """Compose and store one head version's full model (mlflow_api.work)."""
    from mlflow_api.work import full_model_build

    full_model_build(artifact_id=artifact_id)
