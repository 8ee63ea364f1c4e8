"""Worker-side work of the core app: what a Celery task of core.tasks calls.

The reaper of stale tracked work lives with the tracked-work machinery (core.tracked_work), which
both sides share; this module holds the probe answer, the only job a core task does itself.
"""

import socket

from core.models import WorkerProbe
from core.tracked_work import row_finish, run_tracked


def probe_answer(*, probe_id: int, worker_name: str) -> None:
    """Record on the probe row that the worker `worker_name` (on this host) answered it."""
    run_tracked(
        WorkerProbe,
        probe_id,
        lambda probe: row_finish(
            probe, status=WorkerProbe.Status.ANSWERED, worker=f"{socket.gethostname()}:{worker_name}"
        ),
    )
