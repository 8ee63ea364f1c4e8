"""Teams, memberships and API tokens: every backbone, head, dataset, job and assembly belongs to a team."""

import hashlib

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

slug_validator = RegexValidator(
    r"^[a-z0-9][a-z0-9-]{0,62}$",
    "A slug is 1-63 characters of lowercase letters, digits and '-', starting with a letter "
    "or digit (e.g. 'vision-team').",
)


class Team(models.Model):
    slug = models.CharField(max_length=63, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Membership(models.Model):
    class Role(models.TextChoices):
        MEMBER = "member", "Member"
        REVIEWER = "reviewer", "Reviewer"
        ADMIN = "admin", "Admin"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "team"], name="unique_membership")]
        ordering = ["team__slug"]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} as {self.role}"

    @property
    def can_review(self) -> bool:
        return self.role in (self.Role.REVIEWER, self.Role.ADMIN)

    @property
    def can_manage(self) -> bool:
        return self.role == self.Role.ADMIN


class ApiToken(models.Model):
    """A named API key of one user. Only the key's sha256 is stored: the key is shown once, at creation.

    Requests send it as ``Authorization: Token <key>`` (teams.authentication).
    """

    NAME_MAX_LENGTH = 100
    PREFIX_LENGTH = 8
    MAX_EXPIRY_DAYS = 3650

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        EXPIRED = "expired", "Expired"
        REVOKED = "revoked", "Revoked"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=NAME_MAX_LENGTH)
    prefix = models.CharField(max_length=PREFIX_LENGTH, help_text="The key's first characters, shown in lists.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False, help_text="sha256 (hex) of the key.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    parent = models.ForeignKey(
        "self",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="children",
        editable=False,
        help_text="The token whose request made this one (POST /api/tokens/ with a token): it never outlives "
        "it, and revoking it revokes this one. Empty for tokens made from a session or by password exchange.",
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}...)"

    @staticmethod
    def hash_key(key: str) -> str:
        """Return the stored form of `key`: its sha256, hex (keys are random, so no salt is needed)."""
        return hashlib.sha256(key.encode()).hexdigest()

    @property
    def status(self) -> str:
        """Return whether the token works now: active, expired or revoked."""
        if self.revoked_at is not None:
            return self.Status.REVOKED
        if self.expires_at is not None and self.expires_at <= timezone.now():
            return self.Status.EXPIRED
        return self.Status.ACTIVE
