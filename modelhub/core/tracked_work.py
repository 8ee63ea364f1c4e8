"""The job/status pattern every worker task follows: the database row is the truth.

A task takes a row id, claims the row by moving it from a waiting status to a working status
inside a row lock, does the work, and records the outcome on the row. Because the Celery app
acks late and requeues on worker loss, a message can be delivered again:
- a row already finished is left alone (the task is a no-op);
- a row still in its working status means the worker that claimed it died mid-task, so the
  row is failed with "worker lost" instead of being run twice.
"""

from django.db import models, transaction
from django.utils import timezone

WORKER_LOST_MESSAGE = (
    "Worker lost: the worker process running this ended unexpectedly (killed or out of "
    "memory). Nothing it produced was registered. Retry it, or give workers more memory."
)


def row_claim(
    model: type[models.Model],
    pk: int,
    *,
    waiting: tuple[str, ...],
    working: str,
    failed: str,
    also_working: tuple[str, ...] = (),
    **extra_updates,
):
    """Move row `pk` from a `waiting` status to `working` and return it; else return None.

    Args:
        model: a model with `status`, `error`, `started_at` fields.
        pk: the row's primary key.
        waiting: statuses from which the work may start.
        working: the status set while the work runs.
        failed: the status recorded when a redelivery finds the row still `working`.
        also_working: later working statuses (e.g. "verifying") that also mean a lost worker.
        extra_updates: more fields to set on a successful claim.

    Returns:
        The claimed row, or None when there is nothing to do (missing, finished, or lost).
    """
    with transaction.atomic():
        row = model._default_manager.select_for_update().filter(pk=pk).first()
        if row is None:
            return None
        if row.status == working or row.status in also_working:
            row.status = failed
            row.error = WORKER_LOST_MESSAGE
            row.finished_at = timezone.now()
            row.save(update_fields=["status", "error", "finished_at"])
            return None
        if row.status not in waiting:
            return None
        row.status = working
        row.started_at = timezone.now()
        for field, value in extra_updates.items():
            setattr(row, field, value)
        row.save(update_fields=["status", "started_at", *extra_updates])
        return row


def row_finish(row: models.Model, *, status: str, error: str = "", **fields) -> None:
    """Record the outcome of claimed work on its row."""
    row.status = status
    row.error = error
    row.finished_at = timezone.now()
    for field, value in fields.items():
        setattr(row, field, value)
    row.save(update_fields=["status", "error", "finished_at", *fields])


def queue_on_commit(task_name: str, pk: int) -> None:
    """Send task `task_name` for row `pk` once the current transaction commits.

    Tasks are sent by name (routed to their queue by modelhub.celery.route_task), so services
    never import the task modules and the web process never imports TensorFlow.
    """
    from modelhub.celery import app

    transaction.on_commit(lambda: app.send_task(task_name, args=[pk]))
