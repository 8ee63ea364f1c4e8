"""Worker side: a running job's progress, metrics, log and heartbeat on its row; cancel checks.

The job page polls the row, so everything here is written as it happens (progress at most once
a second). Every batch also beats the row's heartbeat, so the reaper knows the worker is alive.
"""

import time
from collections.abc import Callable

import numpy as np
from django.utils import timezone

from core.tracked_work import work_heartbeat
from training.models import Job

LOG_TAIL_CHARS = 20_000
PROGRESS_EVERY_SECONDS = 1.0
CANCEL_CHECK_EVERY_SECONDS = 0.5


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Return the number of batches in one epoch."""
    return max(1, -(-num_examples // max(batch_size, 1)))


class JobReporter:
    """Write progress, per-epoch metrics and log lines to the job row; answer cancel checks."""

    def __init__(self, job: Job, *, epochs: int, steps_per_epoch: int) -> None:
        self.job = job
        self.started = time.monotonic()
        self.last_write = 0.0
        self.last_cancel_check = 0.0
        self.cancel = False
        self.restart(epochs=epochs, steps_per_epoch=steps_per_epoch)

    def restart(self, *, epochs: int, steps_per_epoch: int) -> None:
        """Count a new training phase from zero (e.g. training after growing)."""
        self.epochs = max(epochs, 1)
        self.steps_per_epoch = max(steps_per_epoch, 1)
        self.step = 0
        self.epoch = 0

    def progress(self) -> dict:
        """Return {epoch, epochs, step, steps, eta_s} as the job page shows it."""
        done = self.epoch * self.steps_per_epoch + self.step
        total = self.epochs * self.steps_per_epoch
        elapsed = time.monotonic() - self.started
        eta = elapsed / done * (total - done) if done else None
        return {
            "epoch": self.epoch,
            "epochs": self.epochs,
            "step": self.step,
            "steps": self.steps_per_epoch,
            "eta_s": round(eta, 1) if eta is not None else None,
        }

    def should_cancel(self) -> bool:
        """Called before every batch: count it, beat, write progress (at most 1/s), poll the cancel flag."""
        self.step = min(self.step + 1, self.steps_per_epoch)
        work_heartbeat(self.job)
        now = time.monotonic()
        if now - self.last_write > PROGRESS_EVERY_SECONDS:
            Job.objects.filter(pk=self.job.pk).update(progress=self.progress())
            self.last_write = now
        if now - self.last_cancel_check > CANCEL_CHECK_EVERY_SECONDS:
            self.cancel = Job.objects.filter(pk=self.job.pk, cancel_requested=True).exists()
            self.last_cancel_check = now
        return self.cancel

    def on_epoch(self, metrics: dict, *, phase: str | None = None) -> None:
        """Record one epoch's metrics (plain floats) on the row and in the log."""
        self.epoch = min(self.epoch + 1, self.epochs)
        self.step = 0
        entry = {k: (float(v) if isinstance(v, int | float | np.floating) else v) for k, v in metrics.items()}
        entry["epoch"] = self.epoch
        if phase:
            entry["phase"] = phase
        self.job.metrics = [*self.job.metrics, entry]
        shown = ", ".join(f"{k}={v:.4f}" for k, v in entry.items() if isinstance(v, float))
        self.log(f"epoch {self.epoch}/{self.epochs}{f' ({phase})' if phase else ''}: {shown}", metrics=self.job.metrics)

    def epoch_callback(self, *, phase: str | None = None) -> Callable[[dict], None]:
        """Return the per-epoch ``progress`` function the ML library calls."""

        def progress(metrics: dict) -> None:
            self.on_epoch({k: v for k, v in metrics.items() if k not in ("epoch", "epochs", "phase")}, phase=phase)

        return progress

    def log(self, line: str, **fields) -> None:
        """Append a timestamped line to the job's log (its last LOG_TAIL_CHARS) and beat."""
        stamp = timezone.now().strftime("%H:%M:%S")
        self.job.log = (self.job.log + f"[{stamp}] {line}\n")[-LOG_TAIL_CHARS:]
        Job.objects.filter(pk=self.job.pk).update(log=self.job.log, progress=self.progress(), **fields)
        work_heartbeat(self.job)

    def final_metrics(self) -> dict:
        """Return the last epoch's metrics, without its epoch number and phase."""
        last = self.job.metrics[-1] if self.job.metrics else {}
        return {k: v for k, v in last.items() if k not in ("epoch", "phase")}
