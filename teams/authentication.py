"""DRF authentication by named, hashed API tokens: ``Authorization: Token <key>``.

Replaces rest_framework.authentication.TokenAuthentication (same header). The presented key is
hashed and looked up; revoked and expired tokens get a 401 that says so and how to get a new
one. last_used_at is written at most once a minute per token.
"""

from datetime import UTC, datetime

from django.contrib.auth.models import AbstractBaseUser
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from teams.models import ApiToken
from teams.selectors import api_token_find
from teams.services import api_token_mark_used

NEW_TOKEN_HINT = "Create a new one on the dashboard's API tokens page (/account/tokens/) or with POST /api/auth/token/."


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


class ApiTokenAuthentication(TokenAuthentication):
    """Authenticate ``Authorization: Token <key>`` against ApiToken rows (sha256 of the key)."""

    keyword = "Token"
    model = ApiToken

    def authenticate_credentials(self, key: str) -> tuple[AbstractBaseUser, ApiToken]:
        token = api_token_find(key=key)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        label = f"API token '{token.name}' ({token.prefix}...)"
        status = token.status
        if status == ApiToken.Status.REVOKED:
            raise exceptions.AuthenticationFailed(
                f"{label} was revoked on {_when(token.revoked_at)} (by its owner, an admin, or a password "
                f"change) and no longer works. {NEW_TOKEN_HINT}"
            )
        if status == ApiToken.Status.EXPIRED:
            raise exceptions.AuthenticationFailed(
                f"{label} expired on {_when(token.expires_at)} and no longer works. {NEW_TOKEN_HINT}"
            )
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        api_token_mark_used(token=token)
        return token.user, token
