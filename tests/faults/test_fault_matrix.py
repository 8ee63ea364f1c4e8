"""Fault injection with the real worker, Redis and PostgreSQL: every fault ends in a clear state.

A dedicated worker listens on queues of its own and holds each claimed row for a few seconds
(MODELHUB_FAULT_HOLD_SECONDS), so the test can kill its pool process (like the kernel's OOM
killer: SIGKILL) while the work is under way. After each fault: the row is in a terminal status
with a message, nothing is half-registered, and the next piece of work succeeds.
"""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from assemblies.models import Assembly
from backbones.models import BackboneVersion
from heads.models import HeadVersion, ModelImport
from tests.conftest import REPO_ROOT, pool_processes, running_worker, wait_until
from tests.registry_helpers import assert_job_succeeded, import_and_approve, upload, wait_status
from tests.training.helpers import finished_job, post_job, setup_backbone_and_data
from training.models import Job

# They stop the servers every test shares: alone, after the parallel phase of `make test`.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.serial]

QUEUES = {
    "MODELHUB_DEFAULT_QUEUE": "faults-default",
    "MODELHUB_TRAINING_QUEUE": "faults-training",
    "MODELHUB_ASSEMBLY_QUEUE": "faults-assembly",
}
HOLD_SECONDS = 4


@pytest.fixture(scope="module")
def fault_worker(django_db_setup, django_db_blocker, tmp_path_factory):
    name = f"faultworker-{os.getpid()}@{socket.gethostname()}"
    env = {**QUEUES, "MODELHUB_FAULT_HOLD_SECONDS": str(HOLD_SECONDS)}
    log = tmp_path_factory.mktemp("fault-worker") / "worker.log"
    with running_worker(log, name=name, queues=",".join(QUEUES.values()), env=env) as process:
        yield process


@pytest.fixture(autouse=True)
def fault_queues(settings):
    """Route this test's work to the fault worker only."""
    for key, value in QUEUES.items():
        setattr(settings, key, value)


def services(action: str) -> None:
    subprocess.run([str(REPO_ROOT / "scripts" / "test_services.sh"), action], check=True, timeout=60)


def kill_pool_once_claimed(worker, model, pk: int) -> None:
    """Wait until a worker has claimed the row, then SIGKILL the worker's pool process."""
    wait_until(
        lambda: model.objects.filter(pk=pk, started_at__isnull=False, finished_at__isnull=True).exists(),
        timeout=60,
        message=f"{model.__name__} {pk} to be claimed",
    )
    children = pool_processes(worker)
    assert children, "the prefork worker should have a pool process"
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    assert worker.poll() is None, "the worker's main process must survive its pool process"


def test_pool_killed_during_backbone_validation(api_client_for, model_files, fault_worker):
    client = api_client_for("ana")
    created = upload(client, "/api/backbones/", model_files["backbone"], team="vision", name="victim").json()
    kill_pool_once_claimed(fault_worker, BackboneVersion, created["id"])
    body = wait_status(client, f"/api/backbones/{created['id']}/", timeout=60)
    assert body["status"] == "rejected" and body["error"].startswith("Worker lost"), body
    assert body["attempts"] == 1
    # The next upload (same file, new name) validates normally.
    again = upload(client, "/api/backbones/", model_files["backbone_resaved"], team="vision", name="next").json()
    assert wait_status(client, f"/api/backbones/{again['id']}/", timeout=60)["status"] == "ready"


def _post_import(client, model_files, name: str):
    with open(model_files["full_sentiment"], "rb") as a, open(model_files["full_box"], "rb") as b:
        return client.post(
            "/api/imports/",
            {"team": "vision", "backbone_name": name, "feature_layer": "features", "files": [a, b]},
            format="multipart",
        ).json()


def test_pool_killed_during_an_import_registers_nothing(api_client_for, model_files, fault_worker):
    client = api_client_for("ana")
    started = _post_import(client, model_files, "victim")
    kill_pool_once_claimed(fault_worker, ModelImport, started["id"])
    body = wait_status(client, f"/api/imports/{started['id']}/", timeout=60)
    assert body["status"] == "failed" and body["error"].startswith("Worker lost"), body
    assert BackboneVersion.objects.count() == 0 and HeadVersion.objects.count() == 0
    following = _post_import(client, model_files, "next")
    assert wait_status(client, f"/api/imports/{following['id']}/", timeout=90)["status"] == "succeeded"


def test_pool_killed_during_an_assembly_build_then_requested_again(api_client_for, model_files, fault_worker):
    author, reviewer = api_client_for("ana"), api_client_for("rita", role="reviewer")
    imported = import_and_approve(author, reviewer, model_files)
    request = {"team": "vision", "backbone": imported["backbone"]}
    created = author.post("/api/assemblies/", request, format="json").json()
    kill_pool_once_claimed(fault_worker, Assembly, created["id"])
    body = wait_status(author, f"/api/assemblies/{created['id']}/", pending=("queued", "building", "verifying"))
    assert body["status"] == "failed" and body["error"].startswith("Worker lost"), body
    assert Assembly.objects.get(pk=created["id"]).blob_id is None
    # Requested again: the same row is rebuilt; this attempt is counted.
    again = author.post("/api/assemblies/", request, format="json")
    assert again.json()["id"] == created["id"]
    body = wait_status(author, f"/api/assemblies/{created['id']}/", pending=("queued", "building", "verifying"))
    assert body["status"] == "ready", body
    assert Assembly.objects.get(pk=created["id"]).attempts == 2


def test_pool_killed_during_a_training_job_then_retried(api_client_for, model_files, fault_worker, tmp_path):
    client = api_client_for("ana")
    backbone, dataset = setup_backbone_and_data(client, model_files, tmp_path)
    job = post_job(client, "train_head", backbone=backbone["id"], dataset=dataset["id"], task="victim", epochs=2)
    kill_pool_once_claimed(fault_worker, Job, job["id"])
    body = finished_job(client, job["id"], timeout=60)
    assert body["status"] == "failed" and body["error"].startswith("Worker lost"), body
    assert HeadVersion.objects.filter(task__slug="victim").count() == 0
    retry = client.post(f"/api/jobs/{job['id']}/retry/").json()
    assert_job_succeeded(finished_job(client, retry["id"], timeout=120))
    assert HeadVersion.objects.filter(task__slug="victim").count() == 1


def test_redis_restarted_during_a_job(api_client_for, model_files, fault_worker, tmp_path):
    client = api_client_for("ana")
    backbone, dataset = setup_backbone_and_data(client, model_files, tmp_path)
    job = post_job(client, "train_head", backbone=backbone["id"], dataset=dataset["id"], task="steady", epochs=2)
    wait_until(
        lambda: Job.objects.filter(pk=job["id"], status="running").exists(), timeout=60, message="the job to start"
    )
    services("redis-restart")  # the broker loses every message and connection (no persistence)
    body = finished_job(client, job["id"], timeout=120)
    assert_job_succeeded(body)  # the pool process finishes; only the broker was lost
    assert fault_worker.poll() is None
    following = post_job(client, "train_head", backbone=backbone["id"], dataset=dataset["id"], task="after", epochs=1)
    assert_job_succeeded(finished_job(client, following["id"], timeout=120))


def test_postgres_stopped_for_10_s_while_the_web_serves_reads(api_client_for, model_files, fault_worker, tmp_path):
    from django.db import connections

    client = api_client_for("ana")
    backbone, dataset = setup_backbone_and_data(client, model_files, tmp_path)
    assert client.get("/api/heads/").status_code == 200
    services("pg-stop")
    answers: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for path in ("/api/heads/", f"/api/backbones/{backbone['id']}/", "/api/datasets/"):
                response = client.get(path)
                answers[response.status_code] = answers.get(response.status_code, 0) + 1
                if response.status_code == 503:
                    assert response.json()["error"]["code"] == "database_unavailable"
                    assert response["Retry-After"]
            time.sleep(0.2)
    finally:
        services("pg-start")
        for connection in connections.all():
            connection.close()
    assert set(answers) == {503}, answers  # never a 500, never a hang
    wait_until(lambda: client.get("/api/heads/").status_code == 200, timeout=30, message="reads to come back")
    assert fault_worker.poll() is None
    job = post_job(client, "train_head", backbone=backbone["id"], dataset=dataset["id"], task="after-pg", epochs=1)
    assert_job_succeeded(finished_job(client, job["id"], timeout=120))


def test_the_matrix_left_the_worker_log_free_of_crashes(fault_worker):
    log = Path(fault_worker.log_path).read_text()
    assert "Thread 'ResultHandler' crashed" not in log
    assert fault_worker.poll() is None
