"""Waiting for the worker: poll a tracked object until it is done, and follow a job's log.

A brief outage (502/503/504, a dropped connection) is polled through; a timeout raises
ModelHubError (code "timeout"). The HTTP itself is the session's (session.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TypeVar

from modelhub_client.errors import ModelHubError
from modelhub_client.models import Job, TrackedObject
from modelhub_client.session import TRANSIENT_STATUSES, Session, _id_of

logger = logging.getLogger("modelhub_client")

Tracked = TypeVar("Tracked", bound=TrackedObject)


class Polling(Session):
    """The session, plus reading tracked objects again until the worker is done with them."""

    def refresh(self, obj: Tracked) -> Tracked:
        """Return the object again, fresh from the server."""
        return type(obj).from_api(self._json("GET", obj.path))

    def wait(
        self,
        obj: Tracked,
        *,
        timeout: float | None = None,
        interval: float = 0.5,
        max_interval: float = 5.0,
    ) -> Tracked:
        """Poll the object until the worker is done with it; return it in its terminal status.

        The interval grows by half each poll up to ``max_interval``. A brief 502/503/504 or a
        dropped connection is polled through. Raises ModelHubError (code "timeout") after
        ``timeout`` seconds; a failed object is returned, not raised (check ``.failed``).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        current = obj
        while not current.done:
            if deadline is not None and time.monotonic() + interval > deadline:
                raise ModelHubError(
                    f"Gave up waiting for {current.label} after {timeout:g} s: it is still '{current.status}'. "
                    "Wait longer (--timeout), or look at the worker.",
                    code="timeout",
                    detail={"id": current.id, "status": current.status},
                )
            time.sleep(interval)
            interval = min(interval * 1.5, max_interval)
            try:
                current = self.refresh(current)
            except ModelHubError as exc:
                if exc.status not in TRANSIENT_STATUSES and exc.code not in ("connection_error", "timeout"):
                    raise
                logger.info("polling %s: %s (trying again)", current.label, exc)
        return current

    def follow(
        self,
        job: Job | int,
        *,
        interval: float = 1.0,
        timeout: float | None = None,
    ) -> Iterator[str]:
        """Yield a job's log lines as they appear, and a progress line when only the progress moved.

        Ends when the job is done; then ``client.job(id)`` has its outcome. Raises ModelHubError
        (code "timeout") after ``timeout`` seconds.
        """
        job_id = _id_of(job)
        deadline = None if timeout is None else time.monotonic() + timeout
        shown_log = ""
        shown_progress: dict | None = None
        while True:
            try:
                current = self.refresh(Job(id=job_id))
            except ModelHubError as exc:
                if exc.status not in TRANSIENT_STATUSES and exc.code not in ("connection_error", "timeout"):
                    raise
                current = None
            if current is not None:
                new_lines = _new_log_lines(shown_log, current.log or "")
                shown_log = current.log or ""
                yield from new_lines
                progress = current.progress or None
                if progress and progress != shown_progress and not new_lines and not current.done:
                    yield _progress_line(progress)
                shown_progress = progress
                if current.done:
                    return
            if deadline is not None and time.monotonic() + interval > deadline:
                raise ModelHubError(
                    f"Stopped following job {job_id} after {timeout:g} s; it is still running.",
                    code="timeout",
                    detail={"id": job_id},
                )
            time.sleep(interval)


def _new_log_lines(shown: str, log: str) -> list[str]:
    """Return the complete lines of ``log`` after what was shown (the server keeps only a tail)."""
    if log.startswith(shown):
        fresh = log[len(shown) :]
    else:  # the front was trimmed: continue after the last line shown, if it is still there
        last = shown.rstrip("\n").rpartition("\n")[2]
        position = log.rfind(last + "\n") if last else -1
        fresh = log[position + len(last) + 1 :] if position >= 0 else log
    return [line for line in fresh.splitlines() if line.strip()]


def _progress_line(progress: dict) -> str:
    """Return e.g. "progress: epoch 2/5, step 10/40, about 12 s left"."""
    parts = []
    if progress.get("epochs"):
        parts.append(f"epoch {min(progress.get('epoch', 0) + 1, progress['epochs'])}/{progress['epochs']}")
    if progress.get("steps"):
        parts.append(f"step {progress.get('step', 0)}/{progress['steps']}")
    if progress.get("eta_s") is not None:
        parts.append(f"about {progress['eta_s']:.0f} s left")
    return "progress: " + (", ".join(parts) if parts else str(progress))
