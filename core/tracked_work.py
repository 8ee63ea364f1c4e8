"""The one path every worker task takes through its row: claim, beat, finish.

The database row (a core.models.TrackedWork) is the truth. A task takes a row id,
claims the row inside a row lock, beats its heartbeat while it works, and finishes it with a
terminal status in the same short transaction that writes its results. Because the Celery app
acks late and requeues on worker loss, a message can be delivered again:

- a row already finished is left alone (the task is a no-op);
- a row still claimed means the worker holding it died mid-task: the row is failed with
  "worker lost" and the work is never run a second time by that message. When that was the
  row's second attempt (it was requested again after an earlier loss), the message says the
  work killed the worker twice, most likely by running out of memory;
- a row whose worker died without any redelivery (a hard time limit, a lost message on the
  filesystem broker) is failed by the reaper once its heartbeat is older than the task time
  limit plus a margin.

Any exception a task lets escape ends its row with a message (``work_guard``): no row stays
in a working status.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

logger = logging.getLogger(__name__)

WORKER_LOST_MESSAGE = (
    "Worker lost: the worker process running this ended unexpectedly (killed or out of "
    "memory). Nothing it produced was registered. Retry it, or give workers more memory."
)
WORKER_KILLED_TWICE_MESSAGE = (
    "Worker lost twice: this work ended the worker process on two attempts, most likely by running "
    "out of memory. Nothing it produced was registered, and it is not retried automatically. Give "
    "workers more memory or make the input smaller, then request it again."
)
REAPED_MESSAGE = (
    "Worker lost: no sign of life from the worker for longer than the task time limit "
    "({seconds} s). Nothing it produced was registered. Retry it."
)
HEARTBEAT_EVERY_SECONDS = 10


def worker_name() -> str:
    """Return this process's worker name (host:pid)."""
    import os

    return f"{socket.gethostname()}:{os.getpid()}"


def row_claim(model: type[models.Model], pk: int, **extra_updates) -> models.Model | None:
    """Claim row ``pk`` for this worker and return it; return None when there is nothing to do.

    Args:
        model: a TrackedWork subclass (its WAITING, WORKING and LOST statuses apply).
        pk: the row's primary key.
        extra_updates: more fields to set on a successful claim.

    Returns:
        The claimed row (status set to its first WORKING status, attempts counted), or None
        when the row is missing, finished, or was held by a worker that died (then it is
        failed here with "worker lost").
    """
    with transaction.atomic():
        row = model._default_manager.select_for_update().filter(pk=pk).first()
        if row is None:
            return None
        if row.is_claimed:
            message = WORKER_KILLED_TWICE_MESSAGE if row.attempts >= 2 else WORKER_LOST_MESSAGE
            logger.warning("%s %s: worker %s lost (attempt %s)", model.__name__, pk, row.worker, row.attempts)
            _fail(row, message)
            return None
        if row.status not in model.WAITING:
            return None
        now = timezone.now()
        row.status = model.WORKING[0]
        row.started_at = now
        row.finished_at = None
        row.heartbeat_at = now
        row.attempts += 1
        row.worker = worker_name()
        row.error = ""
        for field, value in extra_updates.items():
            setattr(row, field, value)
        row.save(
            update_fields=[
                "status",
                "started_at",
                "finished_at",
                "heartbeat_at",
                "attempts",
                "worker",
                "error",
                *extra_updates,
            ]
        )
        return row


def run_tracked(model: type[models.Model], pk: int, work, **extra_updates) -> models.Model | None:
    """Claim row ``pk``, run ``work(row)`` under :func:`work_guard`, and return the row.

    The one entry point of every worker task: a redelivered or finished row is never worked
    on twice, and any failure ends the row with a message.
    """
    row = row_claim(model, pk, **extra_updates)
    if row is None:
        return None
    with work_guard(row):
        _fault_hold(row)
        work(row)
    return row


def _fault_hold(row: models.Model) -> None:
    """Tests only (MODELHUB_FAULT_HOLD_SECONDS): hold the claimed row, beating, so it can be killed."""
    import time

    seconds = int(getattr(settings, "MODELHUB_FAULT_HOLD_SECONDS", 0))
    for _ in range(seconds * 10):
        work_heartbeat(row)
        time.sleep(0.1)


def row_finish(row: models.Model, *, status: str, error: str = "", **fields) -> None:
    """Record the outcome of claimed work on its row (call it inside the results' transaction)."""
    row.status = status
    row.error = error
    row.finished_at = timezone.now()
    for field, value in fields.items():
        setattr(row, field, value)
    row.save(update_fields=["status", "error", "finished_at", *fields])


def work_heartbeat(row: models.Model, *, force: bool = False) -> None:
    """Tell the reaper this worker is alive (at most every HEARTBEAT_EVERY_SECONDS)."""
    now = timezone.now()
    last = getattr(row, "heartbeat_at", None)
    if not force and last is not None and (now - last).total_seconds() < HEARTBEAT_EVERY_SECONDS:
        return
    row.heartbeat_at = now
    type(row)._default_manager.filter(pk=row.pk).update(heartbeat_at=now)


@contextmanager
def work_guard(row: models.Model) -> Iterator[None]:
    """End ``row`` with a message for ANY exception escaping the block, then swallow it.

    MemoryError and other non-Exception errors included: a worker never dies of an input,
    and no row stays in a working status. Domain errors should be caught (and recorded with
    a better message) inside the block; this is the last line.
    """
    try:
        yield
    except BaseException as exc:  # noqa: BLE001 - the last line for any failure
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        logger.exception("%s %s crashed", type(row).__name__, row.pk)
        detail = "ran out of memory" if isinstance(exc, MemoryError) else f"crashed with {type(exc).__name__}: {exc}"
        try:
            row.refresh_from_db(fields=["status"])
            if row.status in type(row).WORKING:
                row_finish(row, status=type(row).LOST, error=f"The work {detail}.")
        except Exception:  # noqa: BLE001 - the database itself may be down
            logger.exception("could not record the failure of %s %s", type(row).__name__, row.pk)


def reap_stale_work(*, now=None) -> dict[str, int]:
    """Fail every claimed row whose heartbeat is older than the task time limit plus a margin.

    Returns:
        ``{model label: number of rows failed}``.
    """
    now = now or timezone.now()
    limit = int(settings.CELERY_TASK_TIME_LIMIT) + int(settings.MODELHUB_REAPER_MARGIN)
    cutoff = now - timedelta(seconds=limit)
    message = REAPED_MESSAGE.format(seconds=limit)
    reaped: dict[str, int] = {}
    for model in tracked_models():
        stale = model._default_manager.filter(
            status__in=model.WORKING, started_at__isnull=False, finished_at__isnull=True
        ).filter(models.Q(heartbeat_at__lt=cutoff) | models.Q(heartbeat_at__isnull=True, started_at__lt=cutoff))
        count = 0
        for pk in list(stale.values_list("pk", flat=True)):
            with transaction.atomic():
                row = model._default_manager.select_for_update().filter(pk=pk).first()
                if row is None or not row.is_claimed:
                    continue
                beat = row.heartbeat_at or row.started_at
                if beat >= cutoff:
                    continue
                _fail(row, message)
                count += 1
        if count:
            reaped[model._meta.label] = count
            logger.warning("reaper failed %s stale %s rows", count, model._meta.label)
    return reaped


def tracked_models() -> list[type[models.Model]]:
    """Every concrete TrackedWork model."""
    from django.apps import apps

    from core.models import TrackedWork

    return [model for model in apps.get_models() if issubclass(model, TrackedWork)]


def _fail(row: models.Model, message: str) -> None:
    row.status = type(row).LOST
    row.error = message
    row.finished_at = timezone.now()
    row.save(update_fields=["status", "error", "finished_at"])


def queue_on_commit(task_name: str, pk: int) -> None:
    """Send task `task_name` for row `pk` once the current transaction commits.

    Tasks are sent by name (routed to their queue by modelhub.celery.route_task), so services
    never import the task modules and the web process never imports TensorFlow.
    """
    from modelhub.celery import app

    transaction.on_commit(lambda: app.send_task(task_name, args=[pk]))
