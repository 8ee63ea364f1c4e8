"""Celery tasks for datasets and training jobs (training.* routes to the training queue).

Thin: each task takes an id and calls the work in training.work, imported inside the task so
the web process that queues it never loads TensorFlow.
"""

from modelhub.celery import app


@app.task(name="training.validate_dataset")
def validate_dataset(dataset_id: int) -> None:
    from training.work.datasets import dataset_validate

    dataset_validate(dataset_id=dataset_id)


@app.task(name="training.run_job")
def run_job(job_id: int) -> None:
    from training.work.jobs import job_run

    job_run(job_id=job_id)
