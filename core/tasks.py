"""Celery tasks of the core app (thin: take ids, guard on status, record on the row)."""

import socket

from core.models import WorkerProbe
from core.tracked_work import row_finish, run_tracked
from modelhub.celery import app


@app.task(name="core.answer_probe")
def answer_probe(probe_id: int) -> None:
    """Record on the probe row which worker answered it."""
    run_tracked(
        WorkerProbe,
        probe_id,
        lambda probe: row_finish(
            probe,
            status=WorkerProbe.Status.ANSWERED,
            worker=f"{socket.gethostname()}:{answer_probe.request.hostname}",
        ),
    )


@app.task(name="core.reap_stale_work")
def reap_stale_work() -> dict:
    """Fail rows whose worker stopped beating for longer than the task time limit (periodic)."""
    from core.tracked_work import reap_stale_work as reap

    return reap()
