"""Celery tasks for datasets and training jobs (training.* routes to the training queue)."""

from modelhub.celery import app


@app.task(name="training.validate_dataset")
def validate_dataset(dataset_id: int) -> None:
    from training.datasets import dataset_validate

    dataset_validate(dataset_id=dataset_id)


@app.task(name="training.run_job")
def run_job(job_id: int) -> None:
    from training.runners import job_run

    job_run(job_id=job_id)
