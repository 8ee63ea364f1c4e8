"""Run MlflowClient calls (mlflow-skinny, unmodified, from .venv-clients) and print their results as JSON.

Usage: MLFLOW_TRACKING_URI=... MLFLOW_TRACKING_TOKEN=... python mlflow_calls.py '<json list of calls>'
Each call is [method, *args]; "download_artifacts" is mlflow.artifacts.download_artifacts(uri, dst_path).
An MlflowException becomes {"error_code", "message"}; anything else fails the script.
"""

import json
import sys

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException


def _plain(value):
    """MLflow entities (RegisteredModel, ModelVersion) as plain JSON values."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "name") and hasattr(value, "tags"):
        keys = ["name", "version", "aliases", "status", "tags", "source", "description", "latest_versions"]
        return {key: _plain(getattr(value, key)) for key in keys if hasattr(value, key)}
    try:
        return [_plain(item) for item in value]
    except TypeError:
        return str(value)


def main() -> None:
    client = MlflowClient()
    results = []
    for method, *args in json.loads(sys.argv[1]):
        try:
            if method == "download_artifacts":
                value = mlflow.artifacts.download_artifacts(artifact_uri=args[0], dst_path=args[1])
            elif method == "search_registered_models":
                value = list(client.search_registered_models(*args))
            elif method == "search_model_versions":
                value = list(client.search_model_versions(*args))
            else:
                value = getattr(client, method)(*args)
            results.append({"ok": _plain(value)})
        except MlflowException as exc:
            results.append({"error_code": exc.error_code, "message": exc.message})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
