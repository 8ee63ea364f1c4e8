"""The load bench's clients: threads looping over a weighted mix of API calls, their statistics,
the watcher of the fine_tune job, and the scan of the server's logs (bench/load.py).
"""

from __future__ import annotations

import math
import random
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.load_seed import PASSWORD, TEAM, Api, Seed

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
