"""Reads for teams, memberships and API tokens. Non-members get NotFoundError (404), never 403."""

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from core.errors import NotFoundError, PermissionDeniedError
from teams.models import ApiToken, Membership, Team

ROLE_RANK = {Membership.Role.MEMBER: 0, Membership.Role.REVIEWER: 1, Membership.Role.ADMIN: 2}


def team_list_for_user(*, user: AbstractBaseUser) -> QuerySet[Team]:
    """Return the teams `user` belongs to."""
    if not user.is_authenticated:
        return Team.objects.none()
    return Team.objects.filter(memberships__user=user).distinct()


def membership_get(*, user: AbstractBaseUser, team_slug: str) -> Membership:
    """Return the user's membership of the team, or raise NotFoundError if there is none."""
    membership = None
    if user.is_authenticated:
        membership = Membership.objects.select_related("team").filter(user=user, team__slug=team_slug).first()
    if membership is None:
        raise NotFoundError(
            f"Team '{team_slug}' was not found. Use the slug of a team you belong to (GET /api/teams/ lists them).",
            code="team_not_found",
        )
    return membership


def membership_require_role(*, user: AbstractBaseUser, team: Team, role: str) -> Membership:
    """Return the membership if its role is at least `role`; 404 for non-members, 403 below."""
    membership = membership_get(user=user, team_slug=team.slug)
    if ROLE_RANK[membership.role] < ROLE_RANK[role]:
        raise PermissionDeniedError(
            f"This needs the '{role}' role in team '{team.slug}'; you are '{membership.role}'. "
            "Ask a team admin to change your role.",
        )
    return membership


def scoped_to_member(queryset: QuerySet, *, user: AbstractBaseUser) -> QuerySet:
    """Limit a queryset of team-owned rows (with a `team` field) to the user's teams."""
    if not user.is_authenticated:
        return queryset.none()
    return queryset.filter(team__memberships__user=user)


def team_object_get(queryset: QuerySet, *, user: AbstractBaseUser, pk, label: str):
    """Return the team-owned row `pk` if `user` is a member of its team, else NotFoundError."""
    obj = scoped_to_member(queryset, user=user).filter(pk=pk).first()
    if obj is None:
        raise NotFoundError(f"{label} {pk} was not found in any of your teams.")
    return obj


def api_token_list(*, user: AbstractBaseUser) -> QuerySet[ApiToken]:
    """Return the user's API tokens (active, expired and revoked), newest first."""
    if not user.is_authenticated:
        return ApiToken.objects.none()
    return ApiToken.objects.filter(user=user).order_by("-created_at", "-id")


def api_token_get(*, user: AbstractBaseUser, pk) -> ApiToken:
    """Return the user's token `pk`, or NotFoundError (also for another user's token)."""
    token = api_token_list(user=user).filter(pk=pk).first()
    if token is None:
        raise NotFoundError(
            f"API token {pk} was not found among your tokens. GET /api/tokens/ lists them.", code="token_not_found"
        )
    return token


def api_token_find(*, key: str) -> ApiToken | None:
    """Return the token whose key is `key` (looked up by its hash), with its user, or None."""
    return ApiToken.objects.select_related("user").filter(key_hash=ApiToken.hash_key(key)).first()
