"""Celery tasks for heads (thin; TensorFlow is imported only inside the worker call)."""

from modelhub.celery import app


@app.task(name="heads.validate")
def validate_head(head_id: int) -> None:
    """Check an uploaded head (or cut it out of a full model) against its backbone."""
    from heads.work.validation import head_validate

    head_validate(head_id=head_id)


@app.task(name="heads.run_import")
def run_import(import_id: int) -> None:
    """Import K full models as one backbone + K draft heads, all or nothing."""
    from heads.work.importing import import_run

    import_run(import_id=import_id)


# acks_late off on purpose: a compare is cheap to ask for again, and a pair whose files kill the
# worker (OOM) must not be redelivered forever. A lost task is sent again by the next request
# once the pair's pending marker expires (heads.compare.WEIGHTS_PENDING_SECONDS).
@app.task(name="heads.compare_weights", acks_late=False, reject_on_worker_lost=False)
def compare_weights(head_a_id: int, head_b_id: int) -> None:
    """Compare two validated heads' weights and cache the result per pair of blobs."""
    from heads.compare import weights_compare_run

    weights_compare_run(head_a_id=head_a_id, head_b_id=head_b_id)
