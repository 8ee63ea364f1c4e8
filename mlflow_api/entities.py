"""ModelHub rows shaped as MLflow's registry entities (the JSON of MLflow's REST protos).

Timestamps are milliseconds since the epoch. A head version's status maps to MLflow's
ModelVersionStatus: validating -> PENDING_REGISTRATION, rejected -> FAILED_REGISTRATION, the
rest READY (its review status is the tag ``modelhub.status``).
"""

from heads.models import HeadVersion
from mlflow_api.selectors import RegisteredModel

ARTIFACT_ROOT = "modelhub"


def millis(moment) -> int:
    return int(moment.timestamp() * 1000) if moment else 0


def artifact_path(model_name: str, version: int) -> str:
    """The mlflow-artifacts path of a version's files: modelhub/<team>.<task>/<version>."""
    return f"{ARTIFACT_ROOT}/{model_name}/{version}"


def version_tags(head: HeadVersion) -> dict[str, str]:
    tags = {
        "modelhub.head_version": str(head.pk),
        "modelhub.status": head.status,
        "modelhub.backbone": f"{head.backbone.name} v{head.backbone.version}",
        "modelhub.backbone_version": str(head.backbone_id),
    }
    if head.output_width:
        tags["modelhub.output_width"] = str(head.output_width)
    if head.branch:
        tags["modelhub.branch_after"] = str(head.branch.get("after_layer", ""))
    return tags


def model_tags(model: RegisteredModel) -> dict[str, str]:
    tags = {"modelhub.team": model.team.slug, "modelhub.task": model.task.slug}
    if model.task.labels:
        tags["modelhub.labels"] = ",".join(str(label) for label in model.task.labels)
    return tags


def _status(head: HeadVersion) -> tuple[str, str]:
    if head.status == HeadVersion.Status.VALIDATING:
        return "PENDING_REGISTRATION", "ModelHub is validating this head version."
    if head.status == HeadVersion.Status.REJECTED:
        return "FAILED_REGISTRATION", head.error or "Rejected by validation."
    return "READY", f"ModelHub review status: {head.status}."


def model_version(head: HeadVersion, *, aliases: list[str]) -> dict:
    name = f"{head.task.team.slug}.{head.task.slug}"
    status, message = _status(head)
    return {
        "name": name,
        "version": str(head.version),
        "creation_timestamp": millis(head.created_at),
        "last_updated_timestamp": millis(head.reviewed_at or head.finished_at or head.created_at),
        "user_id": head.created_by.get_username() if head.created_by else "",
        "current_stage": "None",
        "description": head.description,
        "source": f"mlflow-artifacts:/{artifact_path(name, head.version)}",
        "run_id": "",
        "status": status,
        "status_message": message,
        "tags": [{"key": key, "value": value} for key, value in version_tags(head).items()],
        "aliases": aliases,
    }


def registered_model(
    model: RegisteredModel, *, heads: list[HeadVersion], aliases: list[tuple[str, HeadVersion]]
) -> dict:
    """The registered model; `heads` newest first, `aliases` [(name, head version)]."""
    newest = heads[0] if heads else None
    by_head: dict[int, list[str]] = {}
    for name, head in aliases:
        by_head.setdefault(head.pk, []).append(name)
    body = {
        "name": model.name,
        "creation_timestamp": millis(model.task.created_at),
        "last_updated_timestamp": max([millis(model.task.created_at)] + [millis(h.created_at) for h in heads]),
        "description": model.task.description,
        "tags": [{"key": key, "value": value} for key, value in model_tags(model).items()],
        "aliases": [{"alias": name, "version": str(head.version)} for name, head in aliases],
    }
    if newest is not None:
        body["latest_versions"] = [model_version(newest, aliases=by_head.get(newest.pk, []))]
    return body
