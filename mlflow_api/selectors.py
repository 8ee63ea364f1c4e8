"""Reads of the MLflow face: registered models are tasks (`{team}.{task}`), versions are their head versions.

A non-member, an unknown team or an unknown task all read as RESOURCE_DOES_NOT_EXIST, as
ModelHub's own API answers 404 to non-members.
"""

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet

from core.errors import NotFoundError, ValidationError
from core.ids import parse_id
from heads.models import HeadVersion, Task
from heads.selectors import head_versions_of_tasks, task_list, task_of_team
from mlflow_api.models import FullModelArtifact
from releases.selectors import alias_list_of_tasks, alias_of_task
from teams.models import Team
from teams.selectors import membership_get

NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"
INVALID = "INVALID_PARAMETER_VALUE"


@dataclass(frozen=True)
class RegisteredModel:
    """One task seen as an MLflow registered model."""

    team: Team
    task: Task

    @property
    def name(self) -> str:
        return f"{self.team.slug}.{self.task.slug}"


def split_name(name: str) -> tuple[str, str]:
    """Return (team slug, task slug) of a registered model name, or raise INVALID_PARAMETER_VALUE."""
    team_slug, dot, task_slug = (name or "").partition(".")
    if not dot or not team_slug or not task_slug:
        raise ValidationError(
            f"Registered model name {name!r} is not '<team>.<task>' (e.g. 'vision.sentiment'): ModelHub names a "
            "registered model by its team's slug and its task's slug.",
            code=INVALID,
        )
    return team_slug, task_slug


def registered_model_get(*, user: AbstractBaseUser, name: str) -> RegisteredModel:
    """Return the registered model `name` of one of the user's teams, else RESOURCE_DOES_NOT_EXIST."""
    team_slug, task_slug = split_name(name)
    try:
        team = membership_get(user=user, team_slug=team_slug).team
    except NotFoundError:
        raise NotFoundError(f"Registered model '{name}' not found (no team '{team_slug}' of yours).", code=NOT_FOUND)
    task = task_of_team(team=team, slug=task_slug)
    if task is None:
        raise NotFoundError(
            f"Registered model '{name}' not found: team '{team_slug}' has no task '{task_slug}'.", code=NOT_FOUND
        )
    return RegisteredModel(team=team, task=task)


def registered_model_tasks(*, user: AbstractBaseUser, names: set[str] | None = None) -> QuerySet[Task]:
    """Return the tasks of the user's teams (only those named `names`, when given), by name.

    A query, not a list: other selectors take it as a subquery (no list of ids is sent back).
    """
    tasks = task_list(user=user)  # none for an anonymous user
    if names is not None:
        wanted = Q(pk__in=[])
        for name in names:
            team_slug, dot, task_slug = name.partition(".")
            if dot and team_slug and task_slug:
                wanted |= Q(team__slug=team_slug, slug=task_slug)
        tasks = tasks.filter(wanted)
    return tasks.select_related("team").order_by("team__slug", "slug")


def registered_model_list(*, user: AbstractBaseUser, names: set[str] | None = None) -> list[RegisteredModel]:
    """Return every task of the user's teams (only those named `names`, when given) as a registered model."""
    return [RegisteredModel(team=task.team, task=task) for task in registered_model_tasks(user=user, names=names)]


def model_versions(*, tasks: "list[Task] | QuerySet[Task]") -> QuerySet[HeadVersion]:
    """Return the head versions of `tasks` (every status), newest first within a task."""
    return (
        head_versions_of_tasks(tasks=tasks)
        .select_related("task", "task__team", "created_by", "backbone")
        .order_by("task__team__slug", "task__slug", "-version")
    )


def model_version_get(*, model: RegisteredModel, version) -> HeadVersion:
    """Return version `version` (a number) of the registered model, else an MLflow error."""
    text = str(version or "").strip()
    number = parse_id(text)
    if number is None:
        shown = f"{text[:40]}{'...' if len(text) > 40 else ''}"
        raise ValidationError(
            f"Model version {shown!r} is not a version number (ASCII digits, at most 18): ask for one of the "
            f"numbers search_model_versions(\"name='{model.name}'\") lists.",
            code=INVALID,
        )
    head = model_versions(tasks=[model.task]).filter(version=number).first()
    if head is None:
        raise NotFoundError(f"Model version '{model.name}' version {text} not found.", code=NOT_FOUND)
    return head


def aliases_by_task(*, tasks: "list[Task] | QuerySet[Task]") -> dict[int, list[tuple[str, HeadVersion]]]:
    """Return {task id: [(alias name, head version)]} of the current aliases of `tasks`."""
    found: dict[int, list[tuple[str, HeadVersion]]] = {}
    for alias in alias_list_of_tasks(tasks=tasks):
        found.setdefault(alias.task_id, []).append((alias.name, alias.head))
    return found


def model_version_by_alias(*, model: RegisteredModel, alias: str) -> HeadVersion:
    """Return the head version alias `alias` of the task points to, else RESOURCE_DOES_NOT_EXIST."""
    row = alias_of_task(task=model.task, name=alias)
    if row is None:
        raise NotFoundError(f"Registered model alias {alias} not found on '{model.name}'.", code=NOT_FOUND)
    return model_versions(tasks=[model.task]).get(pk=row.head_id)


def full_model_of(*, head: HeadVersion) -> FullModelArtifact | None:
    """Return the head version's full-model row, if one was ever asked for."""
    return FullModelArtifact.objects.filter(head=head).select_related("blob").first()


def full_model_wait(*, artifact: FullModelArtifact, seconds: float) -> FullModelArtifact:
    """Wait at most `seconds` (capped by MODELHUB_PREDICT_MAX_WAIT) for the build to finish; return the row.

    Reads only the status, every 0.1 s and then less often (up to every 0.5 s).
    """
    import time

    from django.conf import settings

    seconds = max(0.0, min(float(seconds), float(settings.MODELHUB_PREDICT_MAX_WAIT)))
    deadline, pause = time.monotonic() + seconds, 0.1
    finished = (FullModelArtifact.Status.READY, FullModelArtifact.Status.FAILED)
    while artifact.status not in finished and time.monotonic() < deadline:
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 1.5, 0.5)
        artifact.status = FullModelArtifact.objects.filter(pk=artifact.pk).values_list("status", flat=True).first()
    artifact.refresh_from_db()
    return artifact
