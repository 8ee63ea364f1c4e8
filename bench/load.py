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
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import embedded_env  # noqa: E402
from bench.load_clients import JobWatcher, Stats, client_loop, endpoint_report, scan_logs  # noqa: E402
from bench.load_seed import Api, calibrate, fine_tune_params, parse_time, planned_epochs, seed  # noqa: E402
from bench.load_stack import PYTHON, REPO, Stack, log, run_sh_flags, start_app, start_postgres, start_redis  # noqa: E402

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
