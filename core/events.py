"""Domain events between apps that must not import each other.

Apps lower in the layers (heads, backbones, assemblies, training) say what happened with
:func:`event_emit`; an app above them (releases: webhooks) subscribes to
:data:`event_emitted`. Before a change that an app above may forbid (archiving a head version
an alias points to), the owner calls :func:`change_check`; a subscriber of
:data:`change_checked` refuses the change by raising a core.errors.ApplicationError.
"""

import logging

from django.db import transaction
from django.dispatch import Signal

logger = logging.getLogger(__name__)

# Sent once the emitting transaction commits, with team_id (int), event (str) and data (dict).
event_emitted = Signal()
# Sent inside the emitting transaction, with team_id (int), change (str) and data (dict).
change_checked = Signal()

EVENTS = (
    "head.status_changed",
    "alias.moved",
    "assembly.ready",
    "assembly.failed",
    "export.ready",
    "export.failed",
    "job.finished",
    "backbone.ready",
)


def event_emit(*, team_id: int, event: str, data: dict) -> None:
    """Announce `event` of team `team_id` to subscribers once the current transaction commits.

    A subscriber's failure is logged, never raised: what happened has happened.
    """
    if event not in EVENTS:
        raise ValueError(f"Unknown event {event!r}; expected one of {EVENTS}.")

    def send() -> None:
        for receiver, result in event_emitted.send_robust(sender=event, team_id=team_id, event=event, data=data):
            if isinstance(result, Exception):
                logger.error("%s failed on event %s: %r", receiver, event, result, exc_info=result)

    transaction.on_commit(send)


def change_check(*, team_id: int, change: str, data: dict) -> None:
    """Ask subscribers whether `change` may happen; one of them raises an ApplicationError to refuse."""
    change_checked.send(sender=change, team_id=team_id, change=change, data=data)
