"""Writes for teams, memberships, users and API tokens."""

import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from core.errors import ValidationError
from teams.models import ApiToken, Membership, Team

# Keys look like "mh_<43 url-safe characters>" (256 random bits), recognisable in logs and by
# secret scanners.
API_TOKEN_KEY_PREFIX = "mh_"
# POST /api/auth/token/ names the tokens it makes like this.
EXCHANGED_TOKEN_NAME = "password exchange"
# last_used_at is written at most this often per token (not once per request).
LAST_USED_RESOLUTION = timedelta(minutes=1)


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
    elif password and not user.check_password(password):
        # A new password revokes the user's API tokens and logs out their sessions (teams/signals.py);
        # re-running with the same password changes nothing.
        user.set_password(password)
        user.save(update_fields=["password"])
    team = team_get_or_create(slug=team_slug)
    membership_set(user=user, team=team, role=role)
    return user, created


@transaction.atomic
def api_token_create(
    *, user: AbstractBaseUser, name: str, expires_in_days: int | None = None, parent: ApiToken | None = None
) -> tuple[ApiToken, str]:
    """Create a named API token for `user`; return (token, key). The key is not stored: show it once.

    `expires_in_days` None means the token never expires. `parent` is the token that authenticated
    the request (None from a dashboard session or a password exchange): the new token expires no
    later than it (an expiring parent caps the child, a non-expiring one does not), and revoking
    the parent revokes it.
    """
    name = (name or "").strip()
    if not name:
        raise ValidationError("A token needs a name, e.g. 'ci' or 'laptop', so that you can tell your tokens apart.")
    if expires_in_days is not None and not 1 <= expires_in_days <= ApiToken.MAX_EXPIRY_DAYS:
        raise ValidationError(
            f"expires_in_days must be between 1 and {ApiToken.MAX_EXPIRY_DAYS}, got {expires_in_days}. "
            "Leave it out for a token that never expires."
        )
    if parent is not None and parent.user_id != user.pk:
        raise ValidationError("A token can only make tokens for its own user.")
    key = API_TOKEN_KEY_PREFIX + secrets.token_urlsafe(32)
    now = timezone.now()
    expires_at = now + timedelta(days=expires_in_days) if expires_in_days is not None else None
    if parent is not None and parent.expires_at is not None:
        expires_at = parent.expires_at if expires_at is None else min(expires_at, parent.expires_at)
    token = ApiToken(
        user=user,
        name=name,
        prefix=key[: ApiToken.PREFIX_LENGTH],
        key_hash=ApiToken.hash_key(key),
        created_at=now,
        expires_at=expires_at,
        parent=parent,
    )
    try:
        token.full_clean()
    except DjangoValidationError as exc:
        raise ValidationError(f"Invalid token: {' '.join(exc.messages)}") from exc
    token.save()
    return token, key


def api_token_exchange(*, user: AbstractBaseUser) -> tuple[ApiToken, str]:
    """Create the token that POST /api/auth/token/ returns for a username and password.

    It expires after settings.MODELHUB_EXCHANGED_TOKEN_DAYS days (0: never).
    """
    days = settings.MODELHUB_EXCHANGED_TOKEN_DAYS
    return api_token_create(user=user, name=EXCHANGED_TOKEN_NAME, expires_in_days=days if days > 0 else None)


@transaction.atomic
def api_token_revoke(*, token: ApiToken) -> ApiToken:
    """Revoke `token` and every token it made, transitively (idempotent): requests with them get 401.

    The rows stay, listed as revoked.
    """
    now = timezone.now()
    family, frontier = [token.pk], [token.pk]
    while frontier:
        frontier = list(ApiToken.objects.filter(parent_id__in=frontier).values_list("pk", flat=True))
        family += frontier
    ApiToken.objects.filter(pk__in=family, revoked_at__isnull=True).update(revoked_at=now)
    if token.revoked_at is None:
        token.revoked_at = now
    return token


@transaction.atomic
def api_token_revoke_all(*, user: AbstractBaseUser) -> int:
    """Revoke every token of `user` that is not revoked yet; return how many."""
    return ApiToken.objects.filter(user=user, revoked_at__isnull=True).update(revoked_at=timezone.now())


def api_token_mark_used(*, token: ApiToken) -> None:
    """Record that `token` was just used: one UPDATE at most per LAST_USED_RESOLUTION, not one per request."""
    now = timezone.now()
    if token.last_used_at is not None and now - token.last_used_at < LAST_USED_RESOLUTION:
        return
    stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
    ApiToken.objects.filter(stale, pk=token.pk).update(last_used_at=now)  # concurrent requests: one writes
    token.last_used_at = now


def token_for_user(*, user: AbstractBaseUser, name: str = "API token") -> str:
    """Create a new API token for `user` (never expiring) and return its key.

    Keys are stored hashed, so an existing key cannot be returned again: every call makes a new one.
    """
    _, key = api_token_create(user=user, name=name)
    return key
