"""Writes of the release workflow: set, move and delete aliases; create webhooks; queue deliveries.

Aliases are protected: only reviewers and admins move them, never onto a head version they
authored by provenance (wrote, carried from their version, or requested the job that made it:
heads.selectors.head_version_authors), and only onto approved versions. Every change is a row of the alias's history.
Events reach webhooks through core.events (apps below emit, this app subscribes).
"""

import json
import re
import secrets

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import ConflictError, PermissionDeniedError, ValidationError
from core.events import EVENTS, event_emit
from heads.models import HeadVersion, Task
from heads.selectors import head_version_authors, head_versions_by_id
from heads.services import check_not_author
from releases.destinations import destination_check
from releases.models import Alias, AliasMove, Webhook, WebhookDelivery
from teams.models import Membership, Team
from teams.selectors import membership_get

ALIAS_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
MIN_SECRET_CHARS = 16
TEST_EVENT = "webhook.test"


def _require_reviewer(*, user: AbstractBaseUser, team: Team, doing: str) -> Membership:
    membership = membership_get(user=user, team_slug=team.slug)
    if not membership.can_review:
        raise PermissionDeniedError(
            f"Only reviewers and admins of team '{team.slug}' can {doing}; you are '{membership.role}'. Ask a reviewer."
        )
    return membership


def check_alias_name(name: str) -> None:
    if not ALIAS_NAME.fullmatch(name or ""):
        message = (
            f"Invalid alias name {name!r}: expected 1-63 lowercase letters, digits, '_' or '-', starting with "
            "a letter or digit (e.g. 'champion', 'staging' or 'canary')."
        )
        raise ValidationError(message, detail={"name": [message]})


def _head_summary(head: HeadVersion | None) -> dict | None:
    if head is None:
        return None
    return {"head_version": head.pk, "version": head.version, "backbone": head.backbone_id}


# --- Aliases --------------------------------------------------------------------------------


def alias_set(
    *, user: AbstractBaseUser, team: Team, task_slug: str, name: str, head_id: int, comment: str = ""
) -> tuple[Alias, bool]:
    """Point alias `name` of a task at head version `head_id`; return (alias, changed).

    Creates the alias or moves it, recording the change in its history (setting it again on
    the version it points to changes nothing). Raises PermissionDeniedError (403) for members
    and for the version's author, ConflictError (409) for a version that is not approved.
    """
    _require_reviewer(user=user, team=team, doing="set or move an alias")
    check_alias_name(name)
    task = Task.objects.filter(team=team, slug=task_slug).first()
    if task is None:
        message = f"Task '{task_slug}' was not found in team '{team.slug}'. Aliases name a task that has heads."
        raise ValidationError(message, detail={"task": [message]}, code="task_not_found")
    with transaction.atomic():
        head = head_versions_by_id(ids=[head_id], team=team, lock=True).first()
        if head is None:
            message = f"Head version {head_id} was not found in team '{team.slug}'."
            raise ValidationError(message, detail={"head": [message]}, code="head_not_found")
        if head.task_id != task.pk:
            message = f"Head version {head_id} is a version of task '{head.task.slug}', not of '{task.slug}'."
            raise ValidationError(message, detail={"head": [message]})
        check_not_author(
            user=user,
            authors=head_version_authors(head=head),
            doing=f"point alias '{name}' at it",
            must="set or move the alias",
        )
        if head.status != HeadVersion.Status.APPROVED:
            raise ConflictError(
                f"Only approved head versions can be aliased; {task.slug} v{head.version} is '{head.status}'. "
                "Get it reviewed and approved first.",
                detail={"current_status": head.status},
                code="not_approved",
            )
        try:
            with transaction.atomic():
                alias, _ = Alias.objects.get_or_create(task=task, name=name)
        except IntegrityError:  # created concurrently
            pass
        alias = Alias.objects.select_for_update().get(task=task, name=name)
        if alias.head_id == head.pk:
            return alias, False
        previous = alias.head
        AliasMove.objects.create(
            alias=alias,
            action=AliasMove.Action.SET if previous is None else AliasMove.Action.MOVE,
            from_head=previous,
            to_head=head,
            actor=user,
            comment=comment,
        )
        alias.head, alias.updated_by = head, user
        alias.full_clean()
        alias.save()
        _alias_moved(alias, previous=previous, user=user, comment=comment)
    return alias, True


def alias_delete(*, user: AbstractBaseUser, alias: Alias, comment: str = "") -> None:
    """Delete an alias (reviewers and admins); its history keeps the deletion."""
    _require_reviewer(user=user, team=alias.task.team, doing="delete an alias")
    with transaction.atomic():
        locked = Alias.objects.select_for_update().select_related("task", "task__team").get(pk=alias.pk)
        if locked.head is None:
            raise ConflictError(f"Alias '{locked.name}' of task '{locked.task.slug}' is already deleted.")
        previous = locked.head
        AliasMove.objects.create(
            alias=locked, action=AliasMove.Action.DELETE, from_head=previous, actor=user, comment=comment
        )
        locked.head, locked.updated_by = None, user
        locked.save()
        _alias_moved(locked, previous=previous, user=user, comment=comment)


def _alias_moved(alias: Alias, *, previous: HeadVersion | None, user: AbstractBaseUser, comment: str) -> None:
    event_emit(
        team_id=alias.task.team_id,
        event="alias.moved",
        data={
            "alias": alias.pk,
            "name": alias.name,
            "task": alias.task.slug,
            "from": _head_summary(previous),
            "to": _head_summary(alias.head),
            "deleted": alias.head is None,
            "actor": user.get_username(),
            "comment": comment,
        },
    )


def alias_guard_change(sender, *, team_id: int, change: str, data: dict, **kwargs) -> None:
    """Refuse to archive a head version an alias points to (a core.events subscriber)."""
    if change != "head.archive":
        return
    aliases = list(Alias.objects.filter(head_id=data["head_version"]).select_related("task", "head").order_by("name"))
    if aliases:
        head = aliases[0].head
        names = ", ".join(f"'{alias.name}'" for alias in aliases)
        raise ConflictError(
            f"{head.task.slug} v{head.version} (head version {head.pk}) is what alias {names} points to, so it "
            "cannot be archived. Move the alias to another version or delete it first.",
            detail={"aliases": [alias.name for alias in aliases]},
            code="aliased",
        )


# --- Webhooks -------------------------------------------------------------------------------


def _check_events(events: list[str]) -> list[str]:
    unknown = sorted(set(events) - set(EVENTS))
    if not events or unknown:
        message = (
            f"Unknown events {unknown}; " if unknown else "No events given; "
        ) + f"subscribe to one or more of {list(EVENTS)}."
        raise ValidationError(message, detail={"events": [message]})
    return list(dict.fromkeys(events))


def webhook_create(
    *, user: AbstractBaseUser, team: Team, url: str, events: list[str], secret: str = ""
) -> tuple[Webhook, str]:
    """Register a webhook of `team` (reviewers and admins); return it and its secret.

    A blank secret is generated. The URL must reach a public address (or one allowed by
    MODELHUB_WEBHOOK_ALLOWED_HOSTS): ValidationError (400) says why not.
    """
    _require_reviewer(user=user, team=team, doing="manage webhooks")
    events = _check_events(events)
    if secret and len(secret) < MIN_SECRET_CHARS:
        message = f"The secret has {len(secret)} characters; use at least {MIN_SECRET_CHARS}, or leave it out."
        raise ValidationError(message, detail={"secret": [message]})
    destination_check(url, allowed_hosts=settings.MODELHUB_WEBHOOK_ALLOWED_HOSTS)
    secret = secret or secrets.token_urlsafe(32)
    with transaction.atomic():
        webhook = Webhook(team=team, url=url, events=events, secret=secret, created_by=user)
        webhook.full_clean()
        webhook.save()
    return webhook, secret


def webhook_delete(*, user: AbstractBaseUser, webhook: Webhook) -> None:
    _require_reviewer(user=user, team=webhook.team, doing="manage webhooks")
    webhook.delete()


def _body(*, event: str, team: Team, data: dict) -> str:
    payload = {"event": event, "team": team.slug, "created_at": timezone.now(), "data": data}
    return json.dumps(payload, cls=DjangoJSONEncoder, separators=(",", ":"))


def delivery_send_on_commit(pk: int, *, countdown: float = 0) -> None:
    """Send the delivery task of row `pk` once the transaction commits (after `countdown` seconds)."""
    from modelhub.celery import app

    transaction.on_commit(lambda: app.send_task("webhooks.deliver", args=[pk], countdown=countdown or None))


def webhook_test(*, user: AbstractBaseUser, webhook: Webhook) -> WebhookDelivery:
    """Queue a 'webhook.test' delivery to the webhook, whatever it subscribes to."""
    _require_reviewer(user=user, team=webhook.team, doing="manage webhooks")
    data = {"webhook": webhook.pk, "message": "A test event sent from ModelHub.", "sent_by": user.get_username()}
    with transaction.atomic():
        body = _body(event=TEST_EVENT, team=webhook.team, data=data)
        delivery = WebhookDelivery.objects.create(webhook=webhook, event=TEST_EVENT, body=body, created_by=user)
        delivery_send_on_commit(delivery.pk)
    return delivery


def webhook_deliveries_queue(sender, *, team_id: int, event: str, data: dict, **kwargs) -> list[WebhookDelivery]:
    """Queue a delivery of `event` to each active webhook of the team subscribed to it (an event subscriber)."""
    webhooks = [
        webhook
        for webhook in Webhook.objects.filter(team_id=team_id, active=True).select_related("team")
        if event in webhook.events
    ]
    deliveries = []
    with transaction.atomic():
        for webhook in webhooks:
            delivery = WebhookDelivery.objects.create(
                webhook=webhook, event=event, body=_body(event=event, team=webhook.team, data=data)
            )
            delivery_send_on_commit(delivery.pk)
            deliveries.append(delivery)
    return deliveries


def delivery_retry_create(delivery: WebhookDelivery, *, countdown: float) -> WebhookDelivery:
    """Create the next try of `delivery` (same event, body and delivery id), queued after `countdown` s."""
    following = WebhookDelivery.objects.create(
        webhook=delivery.webhook,
        event=delivery.event,
        delivery_id=delivery.delivery_id,
        attempt=delivery.attempt + 1,
        body=delivery.body,
        created_by=delivery.created_by,
    )
    delivery_send_on_commit(following.pk, countdown=countdown)
    return following
