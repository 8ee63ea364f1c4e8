"""Release workflow: protected aliases of head versions (with their history) and signed webhooks."""

import uuid

from django.conf import settings
from django.db import models

from core.models import TrackedWork


class Alias(models.Model):
    """A team's named pointer (e.g. 'champion') to one approved head version of a task.

    A deleted alias keeps its row with no head, so that its history stays readable and the same
    name set again continues it.
    """

    task = models.ForeignKey("heads.Task", on_delete=models.CASCADE, related_name="aliases")
    name = models.CharField(max_length=63)
    head = models.ForeignKey(
        "heads.HeadVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="aliases"
    )
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["task__slug", "name"]
        constraints = [models.UniqueConstraint(fields=["task", "name"], name="unique_alias_name")]

    def __str__(self) -> str:
        return f"{self.task.slug}@{self.name}"

    @property
    def team(self):
        return self.task.team


class AliasMove(models.Model):
    """One entry of an alias's history: set, moved or deleted, by whom, from which version to which."""

    class Action(models.TextChoices):
        SET = "set", "Set"
        MOVE = "move", "Moved"
        DELETE = "delete", "Deleted"

    alias = models.ForeignKey(Alias, on_delete=models.CASCADE, related_name="moves")
    action = models.CharField(max_length=8, choices=Action.choices)
    from_head = models.ForeignKey(
        "heads.HeadVersion", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    to_head = models.ForeignKey("heads.HeadVersion", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.action} {self.alias_id}: {self.from_head_id} -> {self.to_head_id}"


class Webhook(models.Model):
    """A team's HTTP endpoint that receives signed JSON deliveries of the events it subscribes to.

    The secret is stored as given (it must sign every delivery) and never shown again after
    creation, except its last characters as a hint.
    """

    team = models.ForeignKey("teams.Team", on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=2000)
    events = models.JSONField(default=list)
    secret = models.CharField(max_length=200)
    active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["team__slug", "-created_at"]

    def __str__(self) -> str:
        return f"webhook {self.pk} -> {self.url}"

    @property
    def secret_hint(self) -> str:
        return f"...{self.secret[-4:]}"


class WebhookDelivery(TrackedWork):
    """One try to deliver one event to one webhook; the tries of an event share `delivery_id`."""

    WAITING = ("queued",)
    WORKING = ("sending",)

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        SENDING = "sending", "Sending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=40)
    delivery_id = models.UUIDField(default=uuid.uuid4, help_text="X-ModelHub-Delivery: the same on every try.")
    attempt = models.PositiveSmallIntegerField(default=1)
    body = models.TextField(help_text="The exact JSON body sent and signed.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    next_try_at = models.DateTimeField(null=True, blank=True, help_text="When the next try is due, if any.")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["webhook", "-created_at"])]

    def __str__(self) -> str:
        return f"delivery {self.delivery_id} try {self.attempt} ({self.status})"
