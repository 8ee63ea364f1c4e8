"""Cancel, worker loss and retry of training jobs, with a real worker process."""

import os
import signal
import subprocess

import pytest

from heads.models import HeadVersion
from tests.conftest import wait_until
from tests.training.helpers import finished_job, post_job, setup_backbone_and_data

pytestmark = pytest.mark.django_db(transaction=True)


def long_job(client, model_files, tmp_path) -> dict:
    backbone, dataset = setup_backbone_and_data(client, model_files, tmp_path, num_rows=4000)
    job = post_job(
        client,
        "train_head",
        backbone=backbone["id"],
        dataset=dataset["id"],
        task="slow",
        head={"type": "mlp", "hidden": [64, 64]},
        epochs=500,
        batch_size=4,
    )

    def running_with_progress():
        body = client.get(f"/api/jobs/{job['id']}/").json()
        return body if body["status"] == "running" and body["progress"].get("step") else None

    return wait_until(running_with_progress, timeout=120, message="the job to report progress")


def test_cancel_stops_at_the_next_batch_and_registers_nothing(api_client_for, model_files, celery_worker, tmp_path):
    client = api_client_for("ana")
    job = long_job(client, model_files, tmp_path)
    assert job["progress"]["epochs"] == 500 and job["progress"]["steps"] == 750
    response = client.post(f"/api/jobs/{job['id']}/cancel/")
    assert response.status_code == 200 and response.json()["cancel_requested"] is True
    body = finished_job(client, job["id"], timeout=60)
    assert body["status"] == "cancelled", body
    assert "Nothing was registered" in body["error"]
    assert HeadVersion.objects.count() == 0
    assert client.post(f"/api/jobs/{job['id']}/cancel/").status_code == 409


def test_killed_worker_fails_the_job_and_retry_runs_it_again(api_client_for, model_files, celery_worker, tmp_path):
    client = api_client_for("ana")
    job = long_job(client, model_files, tmp_path)
    children = subprocess.run(["pgrep", "-P", str(celery_worker.pid)], capture_output=True, text=True).stdout.split()
    assert children, "the prefork worker should have a pool process"
    for pid in children:
        os.kill(int(pid), signal.SIGKILL)  # like the kernel's OOM killer
    body = finished_job(client, job["id"], timeout=120)
    assert body["status"] == "failed"
    assert "Worker lost" in body["error"]
    assert HeadVersion.objects.count() == 0

    retry = client.post(f"/api/jobs/{job['id']}/retry/")
    assert retry.status_code == 202
    assert retry.json()["retry_of"] == job["id"] and retry.json()["params"] == body["params"]
    # Stop the retried (long) run quickly; it proves the worker is alive and took the job.
    wait_until(
        lambda: client.get(f"/api/jobs/{retry.json()['id']}/").json()["status"] == "running",
        timeout=120,
        message="the retried job to start",
    )
    client.post(f"/api/jobs/{retry.json()['id']}/cancel/")
    assert finished_job(client, retry.json()["id"], timeout=60)["status"] == "cancelled"


def test_concurrent_retries_make_one_job_and_the_second_answers_409(api_client_for):
    import threading

    from django.db import connection
    from rest_framework.test import APIClient

    from teams.models import Team
    from training.models import Job

    client = api_client_for("ana")
    job = Job.objects.create(
        team=Team.objects.get(slug="vision"),
        kind="train_head",
        params={"backbone": 1, "dataset": 1, "task": "t"},
        status=Job.Status.FAILED,
        error="Worker lost: ...",
        attempts=1,
        created_by=client.user,
    )
    barrier = threading.Barrier(2)
    answers = []

    def retry():
        own = APIClient()
        own.credentials(**client._credentials)
        barrier.wait()
        answers.append(own.post(f"/api/jobs/{job.pk}/retry/"))
        connection.close()

    threads = [threading.Thread(target=retry) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answer.status_code for answer in answers) == [202, 409]
    retries = Job.objects.filter(retry_of=job)
    assert retries.count() == 1
    conflict = next(answer for answer in answers if answer.status_code == 409).json()["error"]
    assert f"already retried as job {retries.get().pk}" in conflict["message"]
    assert retries.get().attempts == 1  # a retry of lost work keeps counting attempts
