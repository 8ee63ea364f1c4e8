"""The load bench's processes: the app started the way `make run` starts it, on throwaway servers.

Everything started goes through a ``Stack`` and is stopped at the end, always (bench/load.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import embedded_env

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
BIN = Path(PYTHON).parent
PG_PORT, REDIS_PORT = 57432, 57379


def log(message: str) -> None:
    print(f"[load {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Processes: everything started is registered here and stopped at the end, always.


class Stack:
    """Processes and stop callbacks, undone in reverse order; safe to call stop() twice."""

    def __init__(self) -> None:
        self._undo: list[tuple[str, object]] = []
        self._lock = threading.Lock()

    def popen(self, name: str, cmd: list[str], *, env: dict, log_path: Path) -> subprocess.Popen:
        handle = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        with self._lock:
            self._undo.append((name, (proc, handle)))
        return proc

    def callback(self, name: str, fn) -> None:
        with self._lock:
            self._undo.append((name, fn))

    def stop(self) -> None:
        with self._lock:
            undo, self._undo = self._undo, []
        for name, item in reversed(undo):
            try:
                if isinstance(item, tuple):
                    proc, handle = item
                    _stop_group(proc)
                    handle.close()
                else:
                    item()
            except Exception as exc:  # keep stopping the rest
                log(f"stopping {name} failed: {exc!r}")


def _stop_group(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM the process this bench started (gunicorn's master, celery's main process: they stop
    their children), then SIGKILL whatever is left of its process group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):  # stragglers of the group (worker children)
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(preferred: int | None = None) -> int:
    if preferred is not None:
        for port in range(preferred, preferred + 50):
            if port_is_free(port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_sh_flags() -> dict:
    """The gunicorn and celery flags of scripts/run.sh, so the bench runs what `make run` runs."""
    text = (REPO / "scripts" / "run.sh").read_text().replace("\\\n", " ")
    gunicorn = next((line for line in text.splitlines() if "bin/gunicorn" in line), "")
    celery = next((line for line in text.splitlines() if "bin/celery" in line and " worker" in line), "")

    def find(pattern: str, line: str, what: str) -> str:
        match = re.search(pattern, line)
        if not match:
            raise SystemExit(f"bench/load.py: cannot find {what} in scripts/run.sh; update the bench.")
        return match.group(1)

    return {
        "gunicorn_app": find(r"bin/gunicorn\s+(\S+)", gunicorn, "the gunicorn app"),
        "workers": int(find(r"--workers[ =](\d+)", gunicorn, "gunicorn --workers")),
        "threads": int(find(r"--threads[ =](\d+)", gunicorn, "gunicorn --threads")),
        "timeout": int(find(r"--timeout[ =](\d+)", gunicorn, "gunicorn --timeout")),
        "queues": find(r"-Q[ =](\S+)", celery, "celery -Q"),
        "concurrency": int(find(r"--concurrency[ =](\d+)", celery, "celery --concurrency")),
        "beat": bool(re.search(r"\s-B(\s|$)", celery)),
    }


# ---------------------------------------------------------------------------------------------
# PostgreSQL and Redis (throwaway, as scripts/test.sh starts them)


def start_postgres(stack: Stack, run_dir: Path) -> str:
    pg_bin = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))[-1]
    port = free_port(PG_PORT)
    pg_dir = run_dir / "pg"
    pg_dir.mkdir()
    as_pg: list[str] = []
    if os.geteuid() == 0:
        import pwd

        entry = pwd.getpwnam("postgres")
        os.chmod(run_dir, 0o755)
        os.chown(pg_dir, entry.pw_uid, entry.pw_gid)
        as_pg = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [
            *as_pg,
            str(pg_bin / "initdb"),
            "-D",
            str(pg_dir / "data"),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ],
        check=True,
        capture_output=True,
    )
    options = (
        f"-p {port} -k {pg_dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
        "-c full_page_writes=off -c max_connections=200"
    )
    stop_cmd = [*as_pg, str(pg_bin / "pg_ctl"), "-D", str(pg_dir / "data"), "-m", "immediate", "-w", "stop"]

    def stop() -> None:
        subprocess.run(stop_cmd, capture_output=True, timeout=60)

    stack.callback("postgres", stop)
    subprocess.run(
        [
            *as_pg,
            str(pg_bin / "pg_ctl"),
            "-D",
            str(pg_dir / "data"),
            "-l",
            str(pg_dir / "pg.log"),
            "-w",
            "-t",
            "30",
            "-o",
            options,
            "start",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [str(pg_bin / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "modelhub"],
        check=True,
        capture_output=True,
    )
    return f"postgres://postgres@127.0.0.1:{port}/modelhub"


def start_redis(stack: Stack, run_dir: Path) -> str:
    port = free_port(REDIS_PORT)
    redis_dir = run_dir / "redis"
    redis_dir.mkdir()
    proc = stack.popen(
        "redis",
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(redis_dir),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        env=dict(os.environ),
        log_path=redis_dir / "redis.log",
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"redis-server exited; see {redis_dir / 'redis.log'}")
        if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() == b"PONG":
            return f"redis://127.0.0.1:{port}/0"
        time.sleep(0.1)
    raise SystemExit("redis-server did not answer within 15 s")


# ---------------------------------------------------------------------------------------------
# The app


@dataclass
class App:
    base: str
    env: dict
    logs: Path
    web: subprocess.Popen
    worker: subprocess.Popen


def manage(env: dict, *args: str, timeout: float = 300) -> str:
    result = subprocess.run(
        [PYTHON, "manage.py", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return result.stdout


def start_app(stack: Stack, run_dir: Path, extra_env: dict, flags: dict) -> App:
    import requests

    home = run_dir / "home"
    logs = run_dir / "logs"
    home.mkdir()
    logs.mkdir()
    env = embedded_env()
    env.update(MODELHUB_HOME=str(home), TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", **extra_env)
    manage(env, "check_services", "--wait", "30")
    manage(env, "migrate", "--no-input", "-v0")
    port = free_port()
    worker_cmd = [
        str(BIN / "celery"),
        "-A",
        "modelhub",
        "worker",
        "-Q",
        flags["queues"],
        "--concurrency",
        str(flags["concurrency"]),
        "--hostname",
        f"loadbench-{port}@%h",
        "--loglevel",
        "INFO",
    ]
    if flags["beat"]:
        worker_cmd += ["-B", "--schedule", str(home / "celerybeat-schedule")]
    worker = stack.popen("celery worker", worker_cmd, env=env, log_path=logs / "worker.log")
    web = stack.popen(
        "gunicorn",
        [
            str(BIN / "gunicorn"),
            flags["gunicorn_app"],
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(flags["workers"]),
            "--threads",
            str(flags["threads"]),
            "--timeout",
            str(flags["timeout"]),
            "--access-logfile",
            "-",
        ],
        env=env,
        log_path=logs / "web.log",
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if web.poll() is not None or worker.poll() is not None:
            raise SystemExit(f"gunicorn or the worker exited at start; see {logs}")
        try:
            requests.get(f"{base}/api/health/", timeout=5)
            break
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise SystemExit(f"gunicorn did not answer within 60 s; see {logs}") from None
            time.sleep(0.3)
    return App(base=base, env=env, logs=logs, web=web, worker=worker)
