"""Reads of the release workflow: aliases, their history, what an alias resolves to; webhooks."""

from collections import defaultdict
from collections.abc import Iterable

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from backbones.models import BackboneVersion
from core.errors import NotFoundError, PermissionDeniedError, ValidationError
from heads.models import HeadVersion, Task
from releases.models import Alias, AliasMove, Webhook, WebhookDelivery
from teams.models import Team
from teams.selectors import membership_get, scoped_to_member


def _aliases() -> QuerySet[Alias]:
    return Alias.objects.select_related("task", "task__team", "head", "head__created_by", "updated_by")


def alias_list(*, user: AbstractBaseUser, team: Team | None = None, task_slug: str | None = None) -> QuerySet[Alias]:
    """Return the current aliases (not deleted ones) of `team`, or of all the user's teams, by task and name."""
    if team is not None:
        membership_get(user=user, team_slug=team.slug)
        aliases = _aliases().filter(task__team=team, head__isnull=False)
    elif user.is_authenticated:
        aliases = _aliases().filter(task__team__memberships__user=user, head__isnull=False)
    else:
        aliases = Alias.objects.none()
    if task_slug:
        aliases = aliases.filter(task__slug=task_slug)
    return aliases


def alias_get(*, user: AbstractBaseUser, pk, include_deleted: bool = False) -> Alias:
    """Return alias `pk` of one of the user's teams (a deleted one only with include_deleted), else 404."""
    aliases = _aliases().filter(pk=pk)
    if user.is_authenticated:
        aliases = aliases.filter(task__team__memberships__user=user)
    else:
        aliases = aliases.none()
    if not include_deleted:
        aliases = aliases.filter(head__isnull=False)
    alias = aliases.first()
    if alias is None:
        raise NotFoundError(f"Alias {pk} was not found in any of your teams.")
    return alias


def alias_history(*, alias: Alias) -> QuerySet[AliasMove]:
    """Return every set, move and deletion of the alias, newest first."""
    return alias.moves.select_related("actor", "from_head", "to_head")


def alias_moves_for_task(*, task: Task) -> QuerySet[AliasMove]:
    """Return the history of all aliases of a task, newest first."""
    return AliasMove.objects.filter(alias__task=task).select_related("alias", "actor", "from_head", "to_head")


def alias_move_list(*, user: AbstractBaseUser, team: Team) -> QuerySet[AliasMove]:
    """Return every alias set, move and deletion of `team`'s tasks, newest first (empty for a non-member).

    Loads the alias, its task, the actor and the two versions' numbers; not their specs or metrics.
    """
    if not user.is_authenticated:
        return AliasMove.objects.none()
    moves = AliasMove.objects.filter(alias__task__team=team, alias__task__team__memberships__user=user)
    return moves.select_related("alias__task", "actor", "from_head", "to_head").only(
        "action", "comment", "created_at", "alias__name", "alias__task__slug", "actor__username",
        "from_head__version", "to_head__version",
    )  # fmt: skip


def alias_names_by_head(*, head_ids: list[int]) -> dict[int, list[str]]:
    """Return {head version id: [alias names pointing at it]} for the given versions (badges)."""
    names: dict[int, list[str]] = defaultdict(list)
    for head_id, name in Alias.objects.filter(head_id__in=head_ids).order_by("name").values_list("head_id", "name"):
        names[head_id].append(name)
    return dict(names)


def alias_names_by_team(*, team_ids: Iterable[int]) -> dict[int, set[str]]:
    """Return {team id: names of its current aliases} for these teams (not user-scoped)."""
    names: dict[int, set[str]] = {}
    aliases = Alias.objects.filter(head__isnull=False, task__team_id__in=team_ids)
    for team_id, name in aliases.values_list("task__team_id", "name"):
        names.setdefault(team_id, set()).add(name)
    return names


def alias_list_of_tasks(*, tasks: "Iterable[Task] | QuerySet[Task]") -> QuerySet[Alias]:
    """Return the current aliases of `tasks` (a list or a subquery), with their head versions, by name."""
    return Alias.objects.filter(task__in=tasks, head__isnull=False).select_related("head").order_by("name")


def alias_of_task(*, task: Task, name: str) -> Alias | None:
    """Return the current alias `name` of `task` (with its task and team), or None (not user-scoped)."""
    return Alias.objects.filter(task=task, name=name, head__isnull=False).select_related("task__team").first()


def alias_list_for_task(*, task: Task) -> QuerySet[Alias]:
    """Return a task's current aliases (for its page and the review panel)."""
    return _aliases().filter(task=task, head__isnull=False)


def alias_heads_resolve(*, backbone: BackboneVersion, name: str) -> list[HeadVersion]:
    """Return, for each task of the backbone's team, the head version its alias `name` points to on `backbone`.

    Raises ValidationError naming the problem when no task has such an alias on that backbone.
    """
    aliases = list(
        _aliases().filter(task__team_id=backbone.team_id, name=name, head__isnull=False).order_by("task__slug")
    )
    heads = [alias.head for alias in aliases if alias.head.backbone_id == backbone.pk]
    if heads:
        return heads
    if aliases:
        elsewhere = ", ".join(
            f"{alias.task.slug} v{alias.head.version} (backbone version {alias.head.backbone_id})" for alias in aliases
        )
        message = (
            f"No alias '{name}' points to a head on {backbone.label} (id {backbone.pk}); the aliases named "
            f"'{name}' point to {elsewhere}. Pick that backbone, or move the aliases onto heads of this one."
        )
    else:
        message = (
            f"No task of team '{backbone.team.slug}' has an alias '{name}'. Set one with POST /api/aliases/, "
            "or list the heads to assemble in 'heads'."
        )
    raise ValidationError(message, detail={"alias": [message]}, code="alias_not_found")


def _require_reviewer(*, user: AbstractBaseUser, team: Team) -> None:
    membership = membership_get(user=user, team_slug=team.slug)
    if not membership.can_review:
        raise PermissionDeniedError(
            f"Only reviewers and admins of team '{team.slug}' can see its webhooks; you are '{membership.role}'."
        )


def webhook_list(*, user: AbstractBaseUser, team: Team) -> QuerySet[Webhook]:
    """Return the team's webhooks (reviewers and admins only)."""
    _require_reviewer(user=user, team=team)
    return Webhook.objects.filter(team=team).select_related("team")


def webhook_get(*, user: AbstractBaseUser, pk) -> Webhook:
    """Return webhook `pk` of one of the user's teams (404 otherwise; 403 below reviewer)."""
    webhook = scoped_to_member(Webhook.objects.select_related("team"), user=user).filter(pk=pk).first()
    if webhook is None:
        raise NotFoundError(f"Webhook {pk} was not found in any of your teams.")
    _require_reviewer(user=user, team=webhook.team)
    return webhook


def delivery_list(*, webhook: Webhook) -> QuerySet[WebhookDelivery]:
    """Return the webhook's delivery tries, newest first."""
    return webhook.deliveries.all()
