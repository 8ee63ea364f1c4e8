"""Load benchmark: N concurrent API clients against the app as users run it, while a fine_tune job
registers its results.

Usage: python bench/load.py --clients 24 --seconds 60 [--backend embedded|postgres|both]
       [--keep] [--ft-epochs N]      (prints one JSON line per backend, then a combined line last)

For each backend, in a fresh MODELHUB_HOME (temp dir), everything on loopback (127.0.0.1, free ports):

1. Start the app the way `make run` does: `manage.py check_services`, `manage.py migrate`, then
   gunicorn and ONE Celery worker with the flags read from scripts/run.sh (workers, threads,
   timeout; queues, concurrency, beat). `embedded` = nothing set (SQLite in WAL mode +
   filesystem broker); `postgres` = a throwaway PostgreSQL cluster (initdb as the postgres user,
   fsync off, port 57432 or the next free one) plus a throwaway redis-server (port 57379 or the
   next free one) as the broker, as scripts/test.sh does. Artifacts are on the filesystem in
   both cases.
2. Seed through the API: a team with users (`manage.py create_user ... --print-token`), the tiny
   backbone of tests/model_factory.py (waits for the worker to validate it), two datasets, two
   heads trained by a `train_heads` job, submitted and approved (so the forgetting report has
   rows to evaluate), and three uploaded head models.
3. Post a `fine_tune` job on the backbone (warm-up 1 epoch, then N epochs with the top layer
   unfrozen), sized to finish at about 50-70% of the load window: two short calibration jobs
   (unloaded, on every backend so both hold the same rows) give the seconds per epoch and the
   fixed cost; training under load was measured 1.0-1.5x slower here. The first backend's N is
   used for both. The job registers a NEW backbone version, a head and a forgetting report
   while the clients run.
4. N client threads (one requests.Session each, keep-alive) loop until the deadline over a
   weighted mix of GET lists and details, POST comments, POST /api/auth/token/ (PBKDF2 password
   check: heavy, so rare) and POST /api/uploads/ (a random 1-16 KiB file). Each request's
   latency covers sending it and reading the whole body. Every loop is bounded: by the
   deadline, by --max-requests-per-client, and each request by --request-timeout.

Per backend it reports, per endpoint: n, p50/p95/max ms, 5xx and other non-2xx counts; the
total requests and requests per second; 5xx; broken connections (connection reset or refused,
timeouts, protocol errors; with examples); whether the fine_tune job registered during the load
window; and what the server logs show (tracebacks, gunicorn worker timeouts, "database is
locked"). Target: zero 5xx and zero broken connections. `met` also requires that the condition
held: the fine_tune job succeeded and registered its results while the clients were running.
Everything the bench starts, it stops (try/finally, atexit, SIGTERM). Logs and state are removed
unless --keep, or unless the target was missed (then the run directory is kept and named on
stderr).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
BIN = Path(PYTHON).parent
TEAM = "bench"
PASSWORD = "load-bench-password-7Qx"  # noqa: S105 - a throwaway account in a throwaway database
PG_PORT, REDIS_PORT = 57432, 57379
# Sizing the fine_tune job: two calibration jobs (1 warm-up + 1 and + 5 epochs, unloaded) give the
# seconds per epoch and the fixed cost (loading, registration); the job is sized to end at
# FINISH_AT of the load window if training runs LOAD_SLOWDOWN times slower under load (1.0 to 1.5
# measured here at 24 clients, with other work on the machine): at about 47% of the window without
# any slow-down, past its end only beyond about 2x.
CALIBRATION_EPOCHS = (1, 5)
LOAD_SLOWDOWN = 1.5
FINISH_AT = 0.7
# Endpoint mix: name -> weight. Token exchange hashes a password (PBKDF2, ~1 s of CPU): keep it rare.
MIX = {
    "GET /api/heads/": 10,
    "GET /api/backbones/": 8,
    "GET /api/jobs/": 6,
    "GET /api/datasets/": 6,
    "GET /api/imports/": 4,
    "GET /api/heads/{id}/": 12,
    "GET /api/backbones/{id}/": 8,
    "GET /api/jobs/{id}/": 10,
    "POST /api/heads/{id}/comments/": 10,
    "POST /api/auth/token/": 1,
    "POST /api/uploads/": 8,
}

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import embedded_env  # noqa: E402


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
# Model files (built once, in a subprocess: the bench process itself never imports TensorFlow)


def build_files(directory: Path, ft_rows: int) -> None:
    sys.path.insert(0, str(REPO))
    from tests import model_factory as mf

    backbone = mf.make_backbone()
    mf.save(backbone, directory / "backbone.keras")
    for index, kind in enumerate(("dense", "mlp", "regression")):
        mf.save(mf.make_head(kind, units=3, seed=10 + index, name=f"up{index}"), directory / f"head{index}.keras")
    mf.make_classification_npz(directory / "small.npz", num_rows=240, rule_seed=1)
    mf.make_classification_npz(directory / "load.npz", num_rows=ft_rows, rule_seed=2, x_seed=3)
    print(json.dumps({"built": sorted(p.name for p in directory.iterdir())}))


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


# ---------------------------------------------------------------------------------------------
# Seeding through the API


class Api:
    def __init__(self, base: str, token: str) -> None:
        import requests

        self.base = base
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    def call(self, method: str, path: str, *, expect: tuple[int, ...] = (200, 201, 202), **kwargs) -> dict:
        response = self.session.request(method, self.base + path, timeout=120, **kwargs)
        if response.status_code not in expect:
            raise SystemExit(f"seed: {method} {path} answered {response.status_code}: {response.text[:2000]}")
        return response.json()

    def upload(self, path: str, file: Path, **fields) -> dict:
        with open(file, "rb") as handle:
            return self.call("POST", path, data=fields, files={"file": (file.name, handle)})

    def wait(self, path: str, *, pending=("validating", "queued", "running"), timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            body = self.call("GET", path)
            if body.get("status") not in pending:
                return body
            if time.monotonic() > deadline:
                raise SystemExit(f"seed: {path} still {body.get('status')!r} after {timeout:.0f} s")
            time.sleep(0.3)


@dataclass
class Seed:
    tokens: dict[str, str]
    backbone: int
    load_dataset: int
    heads: list[int]
    backbones: list[int]
    jobs: list[int]
    timings: dict = field(default_factory=dict)


def ok(body: dict, what: str, wanted: str) -> dict:
    if body.get("status") != wanted:
        raise SystemExit(f"seed: {what} ended {body.get('status')!r}, expected {wanted!r}: {json.dumps(body)[:3000]}")
    return body


def seed(app: App, files: Path) -> Seed:
    start = time.monotonic()
    tokens = {}
    roles = {"author": "member", "reviewer": "reviewer", "client1": "member", "client2": "member"}
    for username, role in roles.items():
        out = manage(
            app.env, "create_user", username, "--team", TEAM, "--role", role, "--password", PASSWORD, "--print-token"
        )
        tokens[username] = out.strip().splitlines()[-1].strip()
    author, reviewer = Api(app.base, tokens["author"]), Api(app.base, tokens["reviewer"])
    users_s = time.monotonic() - start

    created = author.upload("/api/backbones/", files / "backbone.keras", team=TEAM, name="tiny")
    backbone = ok(author.wait(f"/api/backbones/{created['id']}/"), "the backbone upload", "ready")
    datasets = {}
    for name in ("small", "load"):
        body = author.upload("/api/datasets/", files / f"{name}.npz", team=TEAM, name=name)
        datasets[name] = ok(author.wait(f"/api/datasets/{body['id']}/"), f"dataset {name}", "ready")["id"]
    trained = author.call(
        "POST",
        "/api/jobs/",
        json={
            "team": TEAM,
            "kind": "train_heads",
            "backbone": backbone["id"],
            "mode": "joint",
            "epochs": 2,
            "batch_size": 32,
            "learning_rate": 0.05,
            "seed": 0,
            "tasks": [{"task": f"seed-{i}", "dataset": datasets["small"], "head": {"type": "dense"}} for i in range(2)],
        },
    )
    trained = ok(author.wait(f"/api/jobs/{trained['id']}/"), "the train_heads job", "succeeded")
    heads = list(trained["result"]["head_versions"])
    for head in heads:  # approved heads with validation data: the forgetting report evaluates them
        author.call("POST", f"/api/heads/{head}/submit/")
        reviewer.call("POST", f"/api/heads/{head}/approve/", json={"comment": "ok"})
    for index in range(3):
        body = author.upload(
            "/api/heads/",
            files / f"head{index}.keras",
            backbone=str(backbone["id"]),
            task=f"upload-{index}",
            labels=json.dumps(["a", "b", "c"]),
        )
        ok(author.wait(f"/api/heads/{body['id']}/"), f"head upload {index}", "draft")
        heads.append(body["id"])
    return Seed(
        tokens=tokens,
        backbone=backbone["id"],
        load_dataset=datasets["load"],
        heads=heads,
        backbones=[backbone["id"]],
        jobs=[trained["id"]],
        timings={"users_s": round(users_s, 1), "seed_s": round(time.monotonic() - start, 1)},
    )


def fine_tune_params(seed_: Seed, epochs: int) -> dict:
    return {
        "team": TEAM,
        "kind": "fine_tune",
        "backbone": seed_.backbone,
        "dataset": seed_.load_dataset,
        "task": "load-ft",
        "head": {"type": "dense"},
        "unfreeze_top": 1,
        "warmup_epochs": 1,
        "epochs": epochs,
        "batch_size": 32,
        "learning_rate": 0.01,
        "seed": 0,
    }


def parse_time(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def calibrate(app: App, seed_: Seed) -> dict:
    """Two short fine_tune jobs, unloaded (1 + 1 and 1 + 5 epochs): seconds per epoch and fixed overhead."""
    author = Api(app.base, seed_.tokens["author"])
    seconds = {}
    for epochs in CALIBRATION_EPOCHS:
        job = author.call("POST", "/api/jobs/", json=fine_tune_params(seed_, epochs))
        body = ok(
            author.wait(f"/api/jobs/{job['id']}/", pending=("queued", "running")), "a calibration job", "succeeded"
        )
        seed_.backbones.append(body["result"]["backbone_version"])
        seed_.jobs.append(job["id"])
        seconds[epochs] = parse_time(body["finished_at"]) - parse_time(body["started_at"])
    short, long = CALIBRATION_EPOCHS
    # The difference of the two jobs is noisy on a shared machine: not less than 3/4 of the long
    # job's time per epoch (an upper bound, fixed cost included).
    per_epoch = max((seconds[long] - seconds[short]) / (long - short), 0.75 * seconds[long] / (1 + long))
    overhead = max(0.0, seconds[short] - (1 + short) * per_epoch)
    return {
        "jobs_s": [round(seconds[e], 2) for e in CALIBRATION_EPOCHS],
        "s_per_epoch": round(per_epoch, 3),
        "overhead_s": round(overhead, 2),
    }


def planned_epochs(calibration: dict, seconds: float) -> int:
    """Fine-tune epochs (after the warm-up epoch) that end at FINISH_AT of the window under load."""
    budget = FINISH_AT * seconds / LOAD_SLOWDOWN - calibration["overhead_s"]
    return max(2, int(budget / calibration["s_per_epoch"]) - 1)


# ---------------------------------------------------------------------------------------------
# Clients


BROKEN = "broken"


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    statuses: dict[str, dict[str, int]] = field(default_factory=dict)
    broken: dict[str, int] = field(default_factory=dict)
    broken_examples: list[str] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)

    def record(self, name: str, status: int | str, seconds: float) -> None:
        self.latencies.setdefault(name, []).append(seconds)
        counts = self.statuses.setdefault(name, {})
        counts[str(status)] = counts.get(str(status), 0) + 1

    def merge(self, other: Stats) -> None:
        for name, values in other.latencies.items():
            self.latencies.setdefault(name, []).extend(values)
        for name, counts in other.statuses.items():
            mine = self.statuses.setdefault(name, {})
            for status, count in counts.items():
                mine[status] = mine.get(status, 0) + count
        for kind, count in other.broken.items():
            self.broken[kind] = self.broken.get(kind, 0) + count
        self.broken_examples.extend(other.broken_examples)
        self.server_errors.extend(other.server_errors)


def classify(exc: Exception) -> str:
    """A short name for a broken connection: reset, refused, timeout, protocol, ..."""
    text = repr(exc)
    if "timed out" in text.lower() or "Timeout" in type(exc).__name__:
        return "timeout"
    for needle, kind in (
        ("ConnectionResetError", "reset"),
        ("Connection reset", "reset"),
        ("ConnectionRefusedError", "refused"),
        ("Connection refused", "refused"),
        ("RemoteDisconnected", "remote_disconnected"),
        ("BrokenPipe", "broken_pipe"),
        ("IncompleteRead", "incomplete_read"),
        ("ChunkedEncodingError", "incomplete_read"),
    ):
        if needle in text:
            return kind
    return "protocol"


def client_loop(index: int, base: str, seed_: Seed, users: list[str], deadline: float, args, stats: Stats) -> None:
    import requests

    rng = random.Random(1000 + index)
    username = users[index % len(users)]
    session = requests.Session()
    session.headers["Authorization"] = f"Token {seed_.tokens[username]}"
    names, weights = list(MIX), list(MIX.values())
    timeout = (5.0, args.request_timeout)
    for count in range(args.max_requests_per_client):
        if time.monotonic() >= deadline:
            break
        name = rng.choices(names, weights)[0]
        method, path = name.split(" ", 1)
        kwargs: dict = {}
        if "/heads/{id}/" in path:
            path = path.replace("{id}", str(rng.choice(seed_.heads)))
        elif "/backbones/{id}/" in path:
            path = path.replace("{id}", str(rng.choice(seed_.backbones)))
        elif "/jobs/{id}/" in path:
            path = path.replace("{id}", str(rng.choice(seed_.jobs)))
        if name.startswith("POST /api/heads/"):
            kwargs["json"] = {"body": f"load comment {index}-{count}"}
        elif name == "POST /api/auth/token/":
            kwargs["data"] = {"username": username, "password": PASSWORD}
            kwargs["headers"] = {"Authorization": None}
        elif name == "POST /api/uploads/":
            payload = rng.randbytes(rng.randint(1024, 16 * 1024))
            kwargs["data"] = {"team": TEAM}
            kwargs["files"] = {"file": (f"load-{index}-{count}.bin", payload)}
        started = time.perf_counter()
        try:
            response = session.request(method, base + path, timeout=timeout, **kwargs)
            response.content  # noqa: B018 - read the whole body inside the timing
        except requests.RequestException as exc:
            kind = classify(exc)
            stats.broken[kind] = stats.broken.get(kind, 0) + 1
            stats.record(name, BROKEN, time.perf_counter() - started)
            if len(stats.broken_examples) < 5:
                stats.broken_examples.append(f"{name}: {exc!r}"[:400])
            continue
        stats.record(name, response.status_code, time.perf_counter() - started)
        if response.status_code >= 500 and len(stats.server_errors) < 5:
            stats.server_errors.append(f"{name} -> {response.status_code}: {response.text[:300]}")
    session.close()


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))  # nearest rank
    return sorted_values[rank]


def endpoint_report(stats: Stats) -> dict:
    out = {}
    for name in MIX:
        values = sorted(stats.latencies.get(name, []))
        counts = stats.statuses.get(name, {})
        out[name] = {
            "n": len(values),
            "p50_ms": round(percentile(values, 0.50) * 1000, 1),
            "p95_ms": round(percentile(values, 0.95) * 1000, 1),
            "max_ms": round((values[-1] if values else 0.0) * 1000, 1),
            "errors_5xx": sum(c for s, c in counts.items() if s.isdigit() and int(s) >= 500),
            "other_non_2xx": sum(c for s, c in counts.items() if s.isdigit() and int(s) < 500 and int(s) // 100 != 2),
            "broken": counts.get(BROKEN, 0),
            "statuses": dict(sorted(counts.items())),
        }
    return out


class JobWatcher(threading.Thread):
    """Polls the fine_tune job once a second (its own session, not counted in the load stats)."""

    def __init__(self, base: str, token: str, job_id: int, stop_at: float) -> None:
        super().__init__(daemon=True)
        self.api = Api(base, token)
        self.job_id = job_id
        self.stop_at = stop_at
        self.body: dict = {}
        self.seen_done_at: float | None = None
        self.errors = 0

    def run(self) -> None:
        while time.monotonic() < self.stop_at:
            try:
                response = self.api.session.get(f"{self.api.base}/api/jobs/{self.job_id}/", timeout=30)
                if response.status_code == 200:
                    self.body = response.json()
                    if self.body.get("status") not in ("queued", "running"):
                        self.seen_done_at = time.time()
                        return
            except Exception:
                self.errors += 1
            time.sleep(1.0)


def scan_logs(logs: Path) -> dict:
    web = (logs / "web.log").read_text(errors="replace") if (logs / "web.log").exists() else ""
    worker = (logs / "worker.log").read_text(errors="replace") if (logs / "worker.log").exists() else ""
    # /api/health/ answers 503 at start until the worker has answered a ping: not counted.
    access_5xx = len(re.findall(r'"[A-Z]+ /(?!api/health/)\S* HTTP/1\.[01]" 5\d\d ', web))
    return {
        "web_tracebacks": web.count("Traceback (most recent call last)"),
        "web_worker_timeouts": web.count("WORKER TIMEOUT"),
        "web_access_5xx": access_5xx,
        "database_locked": web.count("database is locked") + worker.count("database is locked"),
        "worker_tracebacks": worker.count("Traceback (most recent call last)"),
    }


# ---------------------------------------------------------------------------------------------


def run_backend(backend: str, args, files: Path, flags: dict, calibration: dict | None) -> tuple[dict, dict, Path]:
    import requests

    run_dir = Path(tempfile.mkdtemp(prefix=f"bench-load-{backend}-"))
    stack = Stack()
    atexit.register(stack.stop)
    try:
        extra: dict = {}
        if backend == "postgres":
            extra["DATABASE_URL"] = start_postgres(stack, run_dir)
            extra["CELERY_BROKER_URL"] = start_redis(stack, run_dir)
        started = time.monotonic()
        app = start_app(stack, run_dir, extra, flags)
        log(f"{backend}: app on {app.base} ({time.monotonic() - started:.1f} s); seeding")
        seeded = seed(app, files)
        log(f"{backend}: seeded in {seeded.timings['seed_s']} s")
        if args.ft_epochs:
            calibration = {"epochs": args.ft_epochs, "given": True}
        else:  # on every backend, so that both hold the same rows; the first one sets the epochs
            measured = calibrate(app, seeded)
            epochs = calibration["epochs"] if calibration else planned_epochs(measured, args.seconds)
            calibration = {**measured, "epochs": epochs}
            log(f"{backend}: calibration {calibration}")

        author = Api(app.base, seeded.tokens["author"])
        job = author.call("POST", "/api/jobs/", json=fine_tune_params(seeded, calibration["epochs"]))
        seeded.jobs.append(job["id"])
        load_start_wall = time.time()
        load_start = time.monotonic()
        deadline = load_start + args.seconds
        watcher = JobWatcher(app.base, seeded.tokens["author"], job["id"], deadline)
        watcher.start()
        users = ["author", "client1", "client2", "reviewer"]
        stats = [Stats() for _ in range(args.clients)]
        threads = [
            threading.Thread(target=client_loop, args=(i, app.base, seeded, users, deadline, args, item), daemon=True)
            for i, item in enumerate(stats)
        ]
        log(f"{backend}: fine_tune job {job['id']} (1 + {calibration['epochs']} epochs); {args.clients} clients")
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=max(1.0, deadline - time.monotonic()) + args.request_timeout + 30)
        load_end = time.monotonic()
        load_end_wall = time.time()
        watcher.join(timeout=5)
        hung = sum(thread.is_alive() for thread in threads)
        total = Stats()
        for item in stats:
            total.merge(item)

        # The fine_tune job: wait for it (bounded) if it outlived the window, then check what it registered.
        body = watcher.body
        if not watcher.seen_done_at:
            body = author.wait(
                f"/api/jobs/{job['id']}/", pending=("queued", "running"), timeout=max(300, 5 * args.seconds)
            )
        finished, started_at = parse_time(body.get("finished_at")), parse_time(body.get("started_at"))
        result = body.get("result") or {}
        registered = {}
        if body.get("status") == "succeeded":
            child = author.call("GET", f"/api/backbones/{result['backbone_version']}/")
            report = author.call("GET", f"/api/forgetting-reports/{result['forgetting_report']}/")
            registered = {
                "backbone_version": child["id"],
                "backbone_parent": child.get("parent"),
                "backbone_status": child.get("status"),
                "forgetting_report": report["id"],
                "forgetting_rows": len(report.get("rows") or []),
            }
        fine_tune = {
            "job": job["id"],
            "status": body.get("status"),
            "epochs": calibration["epochs"] + 1,
            "registered_during_load": bool(
                registered and finished is not None and load_start_wall <= finished <= load_end_wall
            ),
            "duration_s": round(finished - started_at, 1) if finished and started_at else None,
            "finished_after_load_start_s": round(finished - load_start_wall, 1) if finished else None,
            **registered,
        }
        if body.get("status") != "succeeded":
            fine_tune["error"] = (body.get("error") or "")[:500]

        elapsed = load_end - load_start
        endpoints = endpoint_report(total)
        requests_n = sum(e["n"] for e in endpoints.values())
        errors_5xx = sum(e["errors_5xx"] for e in endpoints.values())
        broken = sum(total.broken.values())
        health = requests.get(f"{app.base}/api/health/", timeout=30).status_code
        report = {
            "backend": backend,
            "clients": args.clients,
            "seconds": args.seconds,
            "elapsed_s": round(elapsed, 1),
            "requests": requests_n,
            "rps": round(requests_n / elapsed, 1),
            "endpoints": endpoints,
            "errors_5xx": errors_5xx,
            "broken_connections": broken,
            "broken_by_kind": total.broken,
            "fine_tune": fine_tune,
            "target": {"errors_5xx": 0, "broken_connections": 0},
            "met": errors_5xx == 0 and broken == 0 and hung == 0 and fine_tune["registered_during_load"],
            "hung_clients": hung,
            "server_log": scan_logs(app.logs),
            "health_after": health,
            "app_alive_after": app.web.poll() is None and app.worker.poll() is None,
            "gunicorn": {k: flags[k] for k in ("workers", "threads", "timeout")},
            "seed": seeded.timings,
            "calibration": calibration,
        }
        if total.broken_examples:
            report["broken_examples"] = total.broken_examples
        if total.server_errors:
            report["server_error_examples"] = total.server_errors
        return report, calibration, run_dir
    except BaseException:
        log(f"{backend}: failed; run directory kept (logs, state): {run_dir}")
        raise
    finally:
        stack.stop()
        atexit.unregister(stack.stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--backend", choices=("embedded", "postgres", "both"), default="both")
    parser.add_argument("--ft-epochs", type=int, default=0, help="fine_tune epochs after warm-up (default: calibrated)")
    parser.add_argument("--ft-rows", type=int, default=12000, help="rows of the fine_tune dataset")
    parser.add_argument("--request-timeout", type=float, default=60.0, help="read timeout per request, seconds")
    parser.add_argument("--max-requests-per-client", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="keep the run directories (logs, state)")
    parser.add_argument("--build-into", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_into is not None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        build_files(args.build_into, args.ft_rows)
        return
    if args.clients < 1 or args.seconds <= 0:
        parser.error("--clients and --seconds must be positive")

    # SIGTERM (a killed bench) unwinds like Ctrl-C, so every finally and atexit stop runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    flags = run_sh_flags()
    backends = ["embedded", "postgres"] if args.backend == "both" else [args.backend]
    if "postgres" in backends and not (
        list(Path("/usr/lib/postgresql").glob("*/bin/initdb")) and shutil.which("redis-server")
    ):
        parser.error(
            "the postgres backend needs PostgreSQL and Redis installed (Debian: apt-get install -y postgresql "
            "redis-server; `make test` installs both). Run with --backend embedded meanwhile."
        )
    files = Path(tempfile.mkdtemp(prefix="bench-load-files-"))
    started = time.monotonic()
    reports, kept = [], []
    try:
        env = embedded_env()
        built = subprocess.run(
            [PYTHON, str(Path(__file__).resolve()), "--build-into", str(files), "--ft-rows", str(args.ft_rows)],
            env={**env, "TF_CPP_MIN_LOG_LEVEL": "2"},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if built.returncode != 0:
            raise SystemExit(f"building the model files failed:\n{built.stderr[-4000:]}")
        calibration = None
        for backend in backends:
            report, calibration, run_dir = run_backend(backend, args, files, flags, calibration)
            reports.append(report)
            print(json.dumps(report), flush=True)
            if args.keep or not report["met"]:
                kept.append(str(run_dir))
            else:
                shutil.rmtree(run_dir, ignore_errors=True)
    finally:
        shutil.rmtree(files, ignore_errors=True)
    combined = {
        "backend": "+".join(r["backend"] for r in reports),
        "clients": args.clients,
        "seconds": args.seconds,
        "requests": sum(r["requests"] for r in reports),
        "rps": {r["backend"]: r["rps"] for r in reports},
        "errors_5xx": sum(r["errors_5xx"] for r in reports),
        "broken_connections": sum(r["broken_connections"] for r in reports),
        "fine_tune": {r["backend"]: r["fine_tune"]["registered_during_load"] for r in reports},
        "target": {"errors_5xx": 0, "broken_connections": 0},
        "met": all(r["met"] for r in reports),
        "wall_s": round(time.monotonic() - started, 1),
        "machine": f"{os.cpu_count()} CPU cores",
    }
    if kept:
        log(f"run directories kept (logs, state): {' '.join(kept)}")
    print(json.dumps(combined), flush=True)


if __name__ == "__main__":
    main()
