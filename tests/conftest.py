"""Shared fixtures: users in teams, API clients, a real Celery worker process, Chromium."""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import hostile_files

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, *, timeout: float, interval: float = 0.2, message: str = "condition"):
    """Poll `predicate` until it returns a truthy value; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"Timed out after {timeout}s waiting for {message}.")


# --- Users, teams and clients -------------------------------------------------------------


@pytest.fixture
def make_member(db):
    """Create a user with a role in a team; return (user, token)."""
    from teams.services import token_for_user, user_create_in_team

    def make(username: str, *, team: str = "vision", role: str = "member", password: str = "pw-Secret-123"):
        user, _ = user_create_in_team(username=username, team_slug=team, role=role, password=password)
        return user, token_for_user(user=user)

    return make


@pytest.fixture
def api_client_for(make_member):
    """Return an APIClient authenticated by token as a new member with the given role."""
    from rest_framework.test import APIClient

    def make(username: str, *, team: str = "vision", role: str = "member"):
        user, token = make_member(username, team=team, role=role)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        client.user = user
        return client

    return make


# --- A real Celery worker process ----------------------------------------------------------


def _worker_env() -> dict:
    """Environment for a worker subprocess: the TEST database, same broker and MODELHUB_HOME."""
    from django.conf import settings

    env = dict(os.environ)
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("postgresql"):
        env["DATABASE_URL"] = (
            f"postgres://{db['USER']}:{db.get('PASSWORD') or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
        )
    env["CELERY_BROKER_URL"] = settings.CELERY_BROKER_URL
    env["MODELHUB_HOME"] = str(settings.MODELHUB_HOME)
    env["PYTHONUNBUFFERED"] = "1"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    # A small zip-bomb limit, so that tests can build a bomb quickly.
    env["MODELHUB_MAX_MODEL_UNCOMPRESSED_BYTES"] = str(256 * 1024 * 1024)
    # ... and a small weight-array count, so that tests/hostile_files.py can exceed it quickly.
    env["MODELHUB_MAX_MODEL_WEIGHT_ARRAYS"] = str(hostile_files.TINY_LIMITS["max_datasets"])
    return env


@contextlib.contextmanager
def running_worker(log_path: Path, *, name: str, queues: str = "default,training,assembly", env: dict | None = None):
    """Run `celery worker` (prefork, one pool process) as a separate process; yield it once it answers.

    The process carries `log_path` and `worker_name` attributes.
    """
    import kombu.exceptions
    import redis.exceptions

    from modelhub.celery import app

    log = open(log_path, "w")
    process = subprocess.Popen(
        [
            str(VENV_BIN / "celery"),
            "-A",
            "modelhub",
            "worker",
            "-Q",
            queues,
            "--concurrency",
            "1",
            "--pool",
            "prefork",
            "--without-gossip",
            "--without-mingle",
            "--hostname",
            name,
            "--loglevel",
            "INFO",
        ],
        cwd=REPO_ROOT,
        env={**_worker_env(), **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"Celery worker exited early:\n{log_path.read_text()[-4000:]}")
            # A fresh broker connection per ping: a pooled one may have been closed by a Redis
            # restart earlier in the session (tests/faults).
            try:
                with app.connection_for_write() as connection:
                    replies = app.control.ping(destination=[name], timeout=1.0, connection=connection) or []
            except (OSError, kombu.exceptions.OperationalError, redis.exceptions.ConnectionError):
                replies = []
            if replies:
                break
        else:
            pytest.fail(f"Celery worker did not answer pings within 90s:\n{log_path.read_text()[-4000:]}")
        process.log_path = log_path
        process.worker_name = name
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def pool_processes(worker) -> list[int]:
    """Return the pids of a prefork worker's pool processes (its children)."""
    out = subprocess.run(["pgrep", "-P", str(worker.pid)], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker, tmp_path_factory):
    """Start `celery worker` as a separate process on the test database; yield it.

    Tests using it need `transactional_db` so that the worker sees committed rows.
    """
    name = f"testworker-{os.getpid()}@{socket.gethostname()}"
    with running_worker(tmp_path_factory.mktemp("worker") / "worker.log", name=name) as process:
        yield process


# --- Model files (tiny Keras models shared by registry, assembly and training tests) ---


@pytest.fixture(scope="session")
def model_files(tmp_path_factory):
    """Save a backbone, heads and full models sharing it, plus bad files, once per session."""
    import zipfile

    import keras
    import numpy as np

    from tests import model_factory as mf

    root = tmp_path_factory.mktemp("models")
    backbone = mf.make_backbone(seed=0)
    files = {"backbone": mf.save(backbone, root / "backbone.keras")}
    files["head"] = mf.save(mf.make_head("dense", units=3), root / "head.keras")
    files["full_sentiment"] = mf.save(
        mf.make_full_model(backbone, "dense", 3, seed=1, name="s"), root / "sentiment.keras"
    )
    files["full_topic"] = mf.save(mf.make_full_model(backbone, "mlp", 5, seed=2, name="t"), root / "topic.keras")
    files["full_box"] = mf.save(mf.make_full_model(backbone, "regression", 4, seed=3, name="b"), root / "box.keras")
    other = mf.make_backbone(seed=42)
    files["full_other_backbone"] = mf.save(
        mf.make_full_model(other, "dense", 3, seed=4, name="o"), root / "other.keras"
    )
    perturbed = mf.make_full_model(mf.make_backbone(seed=0), "dense", 3, seed=5, name="p")
    kernel = perturbed.get_layer("hidden").kernel
    kernel.assign(kernel.numpy() + np.float32(1e-3) * (np.arange(kernel.numpy().size).reshape(kernel.shape) == 7))
    files["full_perturbed"] = mf.save(perturbed, root / "perturbed.keras")
    wrong = keras.Sequential([keras.Input(shape=(7,)), keras.layers.Dense(2)])
    files["head_wrong_shape"] = mf.save(wrong, root / "wrong.keras")
    inputs = keras.Input(shape=mf.INPUT_SHAPE, name="inputs")
    lam = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2.0)(inputs))
    files["lambda"] = mf.save(lam, root / "lambda.keras")
    files["corrupt"] = root / "corrupt.keras"
    files["corrupt"].write_bytes(files["head"].read_bytes()[:300])
    bomb = root / "bomb.keras"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("model.weights.h5", b"\0" * (600 * 1024 * 1024))
    files["bomb"] = bomb
    # The same weights saved again: different file bytes, same fingerprint.
    files["backbone_resaved"] = mf.save(keras.models.clone_model(backbone), root / "backbone-resaved.keras")
    mf_model = keras.models.load_model(files["backbone_resaved"])
    mf_model.set_weights(backbone.get_weights())
    files["backbone_resaved"] = mf.save(mf_model, root / "backbone-resaved.keras")
    return files


# --- Headless Chromium (pytest-playwright) -------------------------------------------------


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Use Debian's Chromium; never download a browser."""
    executable = shutil.which("chromium") or "/usr/bin/chromium"
    return {**browser_type_launch_args, "executable_path": executable, "args": CHROMIUM_ARGS, "headless": True}


# Playwright's defaults (30 s for actions and navigations, 5 s for `expect`) are sized for a quiet
# machine. These are sized for a busy one (2 cores, another job on one of them): a page of the
# dashboard renders in well under a second there, so each is a deadline, never a wait. A test
# waiting for a worker passes its own timeout, sized to that work.
PLAYWRIGHT_ACTION_TIMEOUT_MS = 60_000
PLAYWRIGHT_NAVIGATION_TIMEOUT_MS = 90_000
PLAYWRIGHT_EXPECT_TIMEOUT_MS = 30_000


@pytest.fixture
def context(context):
    """pytest-playwright's browser context, with this suite's default timeouts (above)."""
    from playwright.sync_api import expect

    context.set_default_timeout(PLAYWRIGHT_ACTION_TIMEOUT_MS)
    context.set_default_navigation_timeout(PLAYWRIGHT_NAVIGATION_TIMEOUT_MS)
    expect.set_options(timeout=PLAYWRIGHT_EXPECT_TIMEOUT_MS)
    return context


@pytest.fixture
def logged_in_page(page, live_server, make_member):
    """A Playwright page logged in to the dashboard as a fresh team admin."""

    def login(username: str = "dana", *, team: str = "vision", role: str = "admin"):
        make_member(username, team=team, role=role, password="pw-Secret-123")
        page.goto(f"{live_server.url}/login/")
        page.fill("#id_username", username)
        page.fill("#id_password", "pw-Secret-123")
        page.click("button[type=submit]")
        page.wait_for_url(f"{live_server.url}/")
        return page

    return login
