"""`make run` stops completely: after real work, SIGTERM to its process group leaves no process behind.

Issue 21 found the Celery worker's main process alive after `make run` was stopped (orphaned, blocked
on the pool's lock with a defunct pool child). This starts scripts/run.sh as `make run` does, on a
fresh MODELHUB_HOME and port with the embedded default (SQLite, filesystem broker), imports a tiny
model and trains a head through the API, then SIGTERMs the group while idle; starts it again on the
same home (as a second `make run` would) and SIGTERMs it in the middle of a training job. Each time,
no process of the group, and none with that MODELHUB_HOME in its environment, may remain.
"""

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests import model_factory as mf
from tests.conftest import REPO_ROOT, free_port, wait_until
from tests.registry_helpers import LiveApi, assert_job_succeeded, upload, wait_status

ADMIN_PASSWORD = "run-Secret-123"
# run.sh gives web and worker 10 s after TERM, then KILLs them; the rest is a busy machine's slack.
STOP_DEADLINE = 60
# Start: migrations on a fresh SQLite file, collectstatic, then gunicorn and a worker importing TensorFlow.
START_DEADLINE = 240
JOB_PENDING = ("queued", "running")


def _processes_of(home: Path, pgid: int) -> list[str]:
    """Processes in process group `pgid` or with MODELHUB_HOME=`home` in their environment."""
    marker = f"MODELHUB_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            state, group = fields[0], int(fields[2])
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to read
        if group == pgid or marker in environ:
            found.append(f"{entry.name} [{state}] {cmdline[:200]}")
    return found


class MakeRun:
    """scripts/run.sh in a session of its own (its pid is its process group), output to a log."""

    def __init__(self, home: Path, log_path: Path):
        self.home, self.port, self.log_path = home, free_port(), log_path
        env = {
            key: value
            for key, value in os.environ.items()
            # the embedded default: no PostgreSQL, no Redis, nothing from the test run's own settings
            if not key.startswith(("DATABASE_URL", "CELERY_", "PG", "MODELHUB_"))
        }
        env.update(MODELHUB_HOME=str(home), MODELHUB_PORT=str(self.port), MODELHUB_ADMIN_PASSWORD=ADMIN_PASSWORD)
        self.log = open(log_path, "ab")
        self.process = subprocess.Popen(
            ["scripts/run.sh"],
            cwd=REPO_ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def wait_healthy(self) -> LiveApi:
        """Wait until /api/health/ is 200 (database, broker, storage and a worker that answered)."""
        import requests

        def healthy():
            if self.process.poll() is not None:
                pytest.fail(f"run.sh exited with {self.process.returncode} before serving:\n{self.log_tail()}")
            try:
                return requests.get(f"{self.url}/api/health/", timeout=10).status_code == 200
            except requests.RequestException:
                return False

        wait_until(healthy, timeout=START_DEADLINE, interval=0.5, message=f"make run to serve on {self.url}")
        return LiveApi(self.url, username="admin", password=ADMIN_PASSWORD)

    def stop_with(self, signum: int) -> None:
        """Send `signum` to the whole process group, as a terminal or a supervisor does; assert nothing remains."""
        os.killpg(self.process.pid, signum)
        try:
            status = self.process.wait(timeout=STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            pytest.fail(f"run.sh still running {STOP_DEADLINE}s after SIGTERM:\n{self.log_tail()}")
        # run.sh returns once both main processes are gone and it has KILLed both groups; a KILLed
        # process may take a moment to be reaped.
        left = []

        def nothing_left():
            left[:] = _processes_of(self.home, self.process.pid)
            return not left

        try:
            wait_until(nothing_left, timeout=10, interval=0.2, message="the processes of make run to end")
        except pytest.fail.Exception:
            pytest.fail("processes left behind by make run:\n" + "\n".join(left) + f"\n{self.log_tail()}")
        assert status == 0, f"run.sh ended with {status} after a requested stop:\n{self.log_tail()}"

    def kill_everything(self) -> None:
        """After a failure: leave nothing running for the rest of the suite."""
        for line in _processes_of(self.home, self.process.pid):
            try:
                os.kill(int(line.split()[0]), signal.SIGKILL)
            except OSError:
                pass
        self.log.close()


def _post_job(api, **params) -> dict:
    response = api.post("/api/jobs/", {"team": "default", "kind": "train_head", **params}, format="json")
    assert response.status_code == 202, response.text
    return response.json()


def test_make_run_leaves_no_process_after_sigterm_idle_and_mid_task(model_files, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    runs = []
    try:
        # 1. Serve real work (an import and a training job), then SIGTERM the group while idle.
        runs.append(run := MakeRun(home, tmp_path / "run.log"))
        api = run.wait_healthy()
        with open(model_files["full_sentiment"], "rb") as handle:
            created = api.post(
                "/api/imports/",
                {"team": "default", "backbone_name": "shared", "feature_layer": "features", "files": [handle]},
                format="multipart",
            )
        assert created.status_code == 202, created.text
        imported = wait_status(api, f"/api/imports/{created.json()['id']}/", timeout=300)
        assert imported["status"] == "succeeded", imported
        data = upload(
            api, "/api/datasets/", mf.make_classification_npz(tmp_path / "train.npz"), team="default", name="data"
        )
        dataset = wait_status(api, f"/api/datasets/{data.json()['id']}/")
        assert dataset["status"] == "ready", dataset
        job = {
            "backbone": imported["backbone"],
            "dataset": dataset["id"],
            "task": "quadrant",
            "head": {"type": "dense"},
        }
        trained = wait_status(api, f"/api/jobs/{_post_job(api, **job, epochs=2)['id']}/", pending=JOB_PENDING)
        assert_job_succeeded(trained)
        run.stop_with(signal.SIGTERM)

        # 2. A second `make run` on the same MODELHUB_HOME; SIGTERM while a training job is running.
        runs.append(run := MakeRun(home, tmp_path / "run.log"))
        api = run.wait_healthy()
        long_job = _post_job(api, **job, epochs=1000, batch_size=8)

        def training():
            body = api.get(f"/api/jobs/{long_job['id']}/").json()
            assert body["status"] in JOB_PENDING, body
            return body["status"] == "running" and (body.get("progress") or {}).get("epoch", 0) >= 1

        wait_until(training, timeout=180, interval=0.3, message="the long job to be training")
        run.stop_with(signal.SIGTERM)
    finally:
        for started in runs:
            started.kill_everything()
