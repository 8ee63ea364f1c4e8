"""Celery tasks of the core app (thin: take ids, call one function of core.work or core.tracked_work)."""

from modelhub.celery import app


@app.task(name="core.answer_probe")
def answer_probe(probe_id: int) -> None:
    """Record on the probe row which worker answered it."""
    from core.work import probe_answer

    probe_answer(probe_id=probe_id, worker_name=answer_probe.request.hostname)


@app.task(name="core.reap_stale_work")
def reap_stale_work() -> dict:
    """Fail rows whose worker stopped beating for longer than the task time limit (periodic)."""
    from core.tracked_work import reap_stale_work as reap

    return reap()
