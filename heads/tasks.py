"""Celery tasks for heads (thin; TensorFlow is imported only inside the worker call)."""

from modelhub.celery import app


@app.task(name="heads.validate")
def validate_head(head_id: int) -> None:
    """Check an uploaded head (or cut it out of a full model) against its backbone."""
    from heads.validation import head_validate

    head_validate(head_id=head_id)


@app.task(name="heads.run_import")
def run_import(import_id: int) -> None:
    """Import K full models as one backbone + K draft heads, all or nothing."""
    from heads.importing import import_run

    import_run(import_id=import_id)
