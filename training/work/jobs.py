"""Worker side: run a training job: claim it, read its spec, run it by kind, record the outcome.

``job_run`` (the Celery task ``training.run_job`` calls it) claims the job, reads its spec,
runs it by kind and records the outcome. A runner registers its results and the job's
``succeeded`` status together in one short transaction at the very end
(training.work.common.finish_succeeded), so a cancelled, failed or killed job leaves no
half-made backbone or head, and a succeeded job always has its results. The modules of
training.work are listed in its ``__init__``.
"""

import logging
from collections.abc import Callable

from core.events import event_emit
from core.tracked_work import row_finish, run_tracked
from modelhub.ml.errors import MLError, TrainingCancelled
from training.models import Job
from training.specs import JobSpec, JobSpecError, describe_errors, job_spec_parse
from training.work.common import JobLost
from training.work.dataset_zips import DatasetError
from training.work.evaluate_head import run_evaluate_head
from training.work.fine_tune import run_fine_tune
from training.work.grow_backbone import run_grow_backbone
from training.work.train_head import run_train_head
from training.work.train_heads import run_train_heads

logger = logging.getLogger(__name__)

RUNNERS: dict[str, Callable[[Job, JobSpec], dict]] = {
    Job.Kind.TRAIN_HEAD: run_train_head,
    Job.Kind.TRAIN_HEADS: run_train_heads,
    Job.Kind.FINE_TUNE: run_fine_tune,
    Job.Kind.GROW_BACKBONE: run_grow_backbone,
    Job.Kind.EVALUATE_HEAD: run_evaluate_head,
}


def job_run(*, job_id: int) -> Job | None:
    """Claim the job, run it by kind, record succeeded / cancelled / failed on the row; announce job.finished."""
    job = run_tracked(Job, job_id, job_run_claimed)
    if job is not None and job.finished_at is not None:
        data = {"job": job.pk, "kind": job.kind, "status": job.status, "error": job.error, "result": job.result}
        event_emit(team_id=job.team_id, event="job.finished", data=data)
    return job


def job_run_claimed(job: Job) -> None:
    """Run a job this worker has claimed and record its outcome (the runner records success)."""
    try:
        RUNNERS[job.kind](job, job_spec_parse(job.kind, job.params))
    except TrainingCancelled as exc:
        row_finish(job, status=Job.Status.CANCELLED, error=f"{exc} Nothing was registered.")
    except JobSpecError as exc:
        row_finish(
            job,
            status=Job.Status.FAILED,
            error=f"The job's stored parameters are not valid: {describe_errors(exc.errors)}. Start a new job.",
        )
    except (MLError, DatasetError) as exc:
        # A failed job always says why, even when the exception carries no message.
        row_finish(job, status=Job.Status.FAILED, error=str(exc) or f"{type(exc).__name__} (no message).")
    except JobLost as exc:
        logger.warning("%s", exc)
    except Exception as exc:
        logger.exception("job %s crashed", job.pk)
        row_finish(
            job,
            status=Job.Status.FAILED,
            error=f"The job crashed: {type(exc).__name__}: {exc}. Nothing was registered.",
        )
