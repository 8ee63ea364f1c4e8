"""The app as a client outside sees it: gunicorn and a Celery worker of their own, and an HTTP client.

Both processes use the test database and MODELHUB_HOME, but a Redis database of their own for
the broker (and so for the login-throttle cache), so that nothing they queue reaches the session's
shared worker and nothing queued elsewhere reaches them.
"""

import collections
import contextlib
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import REPO_ROOT, VENV_BIN, _worker_env, free_port, wait_until
from tests.xdist_env import INDEX

# A Redis database number no other test uses (the broker's db N also uses N + 1 for the cache);
# under pytest-xdist each worker has its own pair (tests/xdist_env.py).
ISOLATED_REDIS_DB = 8 + 2 * INDEX


# One line per request in <log>.access: "STATUS METHOD /path" (see requests_served()).
ACCESS_LOG_FORMAT = "%(s)s %(m)s %(U)s"
_ACCESS_LINE = re.compile(r"^(\d{3}) [A-Z]+ /")


def requests_served(log_path: Path, *, skip: int = 0) -> collections.Counter:
    """Count the requests gunicorn logged, after the first ``skip`` ones, by status code.

    (A decoded path may hold a newline, so requests are told by their line's start, not by lines.)
    """
    access = log_path.with_suffix(".access")
    text = access.read_text(errors="replace") if access.exists() else ""
    statuses = [match.group(1) for line in text.splitlines() if (match := _ACCESS_LINE.match(line))]
    return collections.Counter(statuses[skip:])


def isolated_env(**extra: str) -> dict:
    """Return the environment of the live app's processes: the test database, a broker of their own."""
    from django.conf import settings

    broker = settings.CELERY_BROKER_URL
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql" or not broker.startswith("redis://"):
        pytest.skip("The live app needs the PostgreSQL test database and a Redis broker: run it with `make test`.")
    env = _worker_env()
    env["CELERY_BROKER_URL"] = broker.rpartition("/")[0] + f"/{ISOLATED_REDIS_DB}"
    env.pop("DEBUG", None)
    env.update(extra)
    return env


def flush_redis(broker_url: str) -> None:
    """Empty the broker's Redis database and the cache's (db + 1): no message or counter of an earlier run."""
    import redis

    base, _, db = broker_url.rpartition("/")
    for number in (int(db), int(db) + 1):
        redis.Redis.from_url(f"{base}/{number}").flushdb()


def _stop(process: subprocess.Popen, *, grace: float) -> None:
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@contextlib.contextmanager
def live_worker(env: dict, log_path: Path):
    """Run a Celery worker (one prefork process) on ``env``'s broker; yield it once it answers a ping."""
    name = f"live-{os.getpid()}@{socket.gethostname()}"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [str(VENV_BIN / "celery"), "-A", "modelhub", "worker", "-Q", "default,training,assembly"]
            + ["--concurrency", "1", "--pool", "prefork", "--without-gossip", "--without-mingle"]
            + ["--hostname", name, "--loglevel", "INFO"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        # Pinged from a process of its own: in this one, Celery publishes to the shared broker of the
        # environment's CELERY_BROKER_URL whatever connection it is given.
        ping = [str(VENV_BIN / "celery"), "-A", "modelhub", "inspect", "ping", "-d", name, "--timeout", "1"]
        try:
            deadline = time.monotonic() + 90
            while subprocess.run(ping, cwd=REPO_ROOT, env=env, capture_output=True).returncode != 0:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"The live app's worker did not start:\n{log_path.read_text()[-4000:]}")
            yield process
        finally:
            # A training step or a build may be running: give it a moment, then stop it.
            _stop(process, grace=20)


@contextlib.contextmanager
def live_server(env: dict, log_path: Path):
    """Run gunicorn (2 processes x 4 threads) on a free loopback port; yield its base URL once it answers.

    Its access log is ``log_path`` with the suffix ".access".
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [str(VENV_BIN / "gunicorn"), "modelhub.wsgi", "--bind", f"127.0.0.1:{port}"]
            + ["--workers", "2", "--threads", "4", "--timeout", "120"]
            + ["--access-logfile", str(log_path.with_suffix(".access")), "--access-logformat", ACCESS_LOG_FORMAT],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:

            def answers():
                if process.poll() is not None:
                    pytest.fail(f"gunicorn exited:\n{log_path.read_text()[-4000:]}")
                # Not up yet, or too slow to answer on a busy machine: ask again until the deadline.
                with contextlib.suppress(requests.ConnectionError, requests.Timeout):
                    return requests.get(f"{url}/api/health/", timeout=5).status_code in (200, 503)
                return False

            wait_until(answers, timeout=60, interval=0.3, message="gunicorn to answer")
            yield url
        finally:
            _stop(process, grace=20)


class LiveClient:
    """The part of DRF's APIClient that tests/registry_helpers.py uses, over real HTTP with a token."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    def get(self, path: str, params: dict | None = None) -> requests.Response:
        return self.session.get(self.base_url + path, params=params, timeout=60)

    def post(self, path: str, data: dict | None = None, format: str | None = None) -> requests.Response:
        if data is None:
            return self.session.post(self.base_url + path, timeout=60)
        if format == "multipart":
            fields, files = [], []
            for key, value in data.items():
                for item in value if isinstance(value, list) else [value]:
                    if hasattr(item, "read"):
                        files.append((key, (Path(item.name).name, item)))
                    else:
                        fields.append((key, str(item)))
            return self.session.post(self.base_url + path, data=fields, files=files, timeout=120)
        return self.session.post(self.base_url + path, json=data, timeout=60)


# --- The embedded default: SQLite, filesystem broker, file cache, all under one MODELHUB_HOME ---------


def embedded_env(home: Path, **extra: str) -> dict:
    """Return the environment of an embedded-default app (what `make run` starts) under ``home``.

    No DATABASE_URL, PG* or Redis: SQLite, the filesystem broker and the file cache, as a fresh
    install has them. The app's database is its own (not the test database): make it with
    ``embedded_setup`` and its users with ``embedded_member``.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PG", "DATABASE_URL", "CELERY_BROKER_URL", "MODELHUB_S3_"))
    }
    env.update(
        MODELHUB_HOME=str(home),
        PYTHONUNBUFFERED="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        MODELHUB_MAX_MODEL_UNCOMPRESSED_BYTES=str(256 * 1024 * 1024),
    )
    env.pop("DEBUG", None)
    env.update(extra)
    return env


def manage(env: dict, *args: str) -> str:
    """Run ``manage.py ARGS`` in ``env``; return its stdout (fail the test with its output if it fails)."""
    result = subprocess.run(
        [str(VENV_BIN / "python"), "manage.py", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.fail(f"manage.py {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return result.stdout


def embedded_setup(env: dict) -> None:
    """Create the embedded app's SQLite database (migrate)."""
    manage(env, "migrate", "--no-input", "-v0")


def embedded_member(
    env: dict, username: str, *, role: str = "member", team: str = "vision", password: str = "pw-Secret-123"
) -> str:
    """Create a user in the embedded app's team with a role; return a new API token of theirs."""
    output = manage(
        env, "create_user", username, "--team", team, "--role", role, "--password", password, "--print-token"
    )
    return output.strip().splitlines()[-1]


def embedded_shell(env: dict, code: str) -> str:
    """Run Python ``code`` in the embedded app's Django (manage.py shell -c); return its stdout."""
    return manage(env, "shell", "-c", code)
