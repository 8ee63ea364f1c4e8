"""Writes of the MLflow face: ask a worker for a head version's full model; set and delete aliases.

Aliases go through releases.services, which enforce four eyes (reviewers and admins only, never
on a version they authored, approved versions only): this module only translates MLflow's
(registered model, version, alias) into ModelHub's (task, head version, alias).
"""

from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import NotFoundError
from core.tracked_work import queue_on_commit
from heads.models import HeadVersion
from mlflow_api.models import FullModelArtifact
from mlflow_api.selectors import RegisteredModel, model_version_get
from releases.models import Alias
from releases.selectors import alias_of_task
from releases.services import alias_delete, alias_set

BUILD_TASK = "mlflow.build_full_model"
# A failed build is queued again on request only this long after it failed (a full backbone load each time).
FULL_MODEL_RETRY_BACKOFF = timedelta(minutes=5)


def full_model_retry_at(*, artifact: FullModelArtifact) -> datetime | None:
    """When a failed build may be queued again (None: now), so that a head that always fails is not rebuilt
    in a loop by clients asking again: FULL_MODEL_RETRY_BACKOFF after the failure."""
    if artifact.status != FullModelArtifact.Status.FAILED or artifact.finished_at is None:
        return None
    retry_at = artifact.finished_at + FULL_MODEL_RETRY_BACKOFF
    return retry_at if retry_at > timezone.now() else None


def full_model_request(*, head: HeadVersion, user: AbstractBaseUser | None = None) -> FullModelArtifact:
    """Return the head version's full-model row, queuing its build when there is none, or when it failed
    more than FULL_MODEL_RETRY_BACKOFF ago (a failed row is returned as it is before that)."""
    with transaction.atomic():
        artifact = FullModelArtifact.objects.select_for_update().filter(head=head).first()
        if artifact is None:
            try:
                with transaction.atomic():
                    artifact = FullModelArtifact.objects.create(head=head, created_by=user)
            except IntegrityError:  # asked for concurrently: the other request queued it
                return FullModelArtifact.objects.get(head=head)
            queue_on_commit(BUILD_TASK, artifact.pk)
        elif artifact.status == FullModelArtifact.Status.FAILED and full_model_retry_at(artifact=artifact) is None:
            artifact.status = FullModelArtifact.Status.QUEUED
            artifact.error = ""
            artifact.started_at = artifact.finished_at = None
            artifact.save(update_fields=["status", "error", "started_at", "finished_at"])
            queue_on_commit(BUILD_TASK, artifact.pk)
    return artifact


def registered_model_alias_set(*, user: AbstractBaseUser, model: RegisteredModel, alias: str, version: str) -> Alias:
    """Point alias `alias` of the task at its head version `version` (releases.services.alias_set)."""
    head = model_version_get(model=model, version=version)
    alias_row, _ = alias_set(user=user, team=model.team, task_slug=model.task.slug, name=alias, head_id=head.pk)
    return alias_row


def registered_model_alias_delete(*, user: AbstractBaseUser, model: RegisteredModel, alias: str) -> None:
    """Delete alias `alias` of the task (releases.services.alias_delete)."""
    row = alias_of_task(task=model.task, name=alias)
    if row is None:
        raise NotFoundError(f"Registered model '{model.name}' has no alias '{alias}'.", code="RESOURCE_DOES_NOT_EXIST")
    alias_delete(user=user, alias=row)
