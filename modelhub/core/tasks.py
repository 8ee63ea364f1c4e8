"""Celery tasks of the core app (thin: take ids, guard on status, record on the row)."""

import socket

from modelhub.celery import app
from modelhub.core.models import WorkerProbe
from modelhub.core.tracked_work import row_claim, row_finish


@app.task(name="core.answer_probe")
def answer_probe(probe_id: int) -> None:
    """Record on the probe row which worker answered it."""
    probe = row_claim(
        WorkerProbe,
        probe_id,
        waiting=(WorkerProbe.Status.QUEUED,),
        working=WorkerProbe.Status.RUNNING,
        failed=WorkerProbe.Status.FAILED,
    )
    if probe is None:
        return
    row_finish(
        probe, status=WorkerProbe.Status.ANSWERED, worker=f"{socket.gethostname()}:{answer_probe.request.hostname}"
    )
