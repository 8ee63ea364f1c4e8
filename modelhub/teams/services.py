"""Writes for teams, memberships, users and API tokens."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from rest_framework.authtoken.models import Token

from modelhub.core.errors import ValidationError
from modelhub.teams.models import Membership, Team


@transaction.atomic
def team_get_or_create(*, slug: str, name: str | None = None) -> Team:
    """Return the team `slug`, creating it (validated) if it does not exist."""
    team = Team.objects.filter(slug=slug).first()
    if team is None:
        team = Team(slug=slug, name=name or slug)
        try:
            team.full_clean()
        except Exception as exc:  # django ValidationError
            raise ValidationError(f"Invalid team slug {slug!r}: {' '.join(exc.messages)}") from exc
        team.save()
    return team


@transaction.atomic
def membership_set(*, user: AbstractBaseUser, team: Team, role: str) -> Membership:
    """Give `user` the `role` in `team`, creating or updating the membership."""
    if role not in Membership.Role.values:
        raise ValidationError(f"Unknown role {role!r}. Expected one of: {', '.join(Membership.Role.values)}.")
    membership, _ = Membership.objects.update_or_create(user=user, team=team, defaults={"role": role})
    return membership


@transaction.atomic
def user_create_in_team(
    *, username: str, team_slug: str, role: str, password: str | None = None, email: str = ""
) -> tuple[AbstractBaseUser, bool]:
    """Create the user if missing (idempotent), add them to the team; return (user, created)."""
    User = get_user_model()
    user = User.objects.filter(username=username).first()
    created = user is None
    if created:
        user = User(username=username, email=email)
        if password:
            user.set_password(password)
        else:
            user.set_unusable_password()
        user.full_clean(exclude=["password"])
        user.save()
    elif password:
        user.set_password(password)
        user.save(update_fields=["password"])
    team = team_get_or_create(slug=team_slug)
    membership_set(user=user, team=team, role=role)
    return user, created


def token_for_user(*, user: AbstractBaseUser) -> str:
    """Return the user's API token, creating it on first use."""
    token, _ = Token.objects.get_or_create(user=user)
    return token.key
