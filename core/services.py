"""Platform services: health of the parts ModelHub depends on, and worker probes."""

import time

from django.conf import settings
from django.db import connection, transaction

from core.models import WorkerProbe
from core.tracked_work import queue_on_commit


def _timed(check) -> dict:
    started = time.monotonic()
    try:
        detail = check()
        return {"ok": True, "detail": detail, "ms": round((time.monotonic() - started) * 1000, 1)}
    except Exception as exc:  # report any failure as data; health must never crash
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}".strip()[:500]}


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return f"{connection.vendor} {connection.settings_dict.get('NAME')}"


def _check_broker() -> str:
    from modelhub.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=settings.CELERY_BROKER_CONNECTION_TIMEOUT)
        return conn.as_uri()


# The storage check belongs to the app that owns storage: artifacts registers it when Django
# starts (artifacts.apps), so core, at the bottom of the layers, imports no app.
_storage_checks: list = []


def health_storage_check_register(check) -> None:
    """Register the function that checks the artifact storage and describes it (called once, by artifacts)."""
    _storage_checks[:] = [check]


def _check_storage() -> str:
    if not _storage_checks:
        raise RuntimeError("no storage check is registered: is 'artifacts' in INSTALLED_APPS?")
    return _storage_checks[0]()


def _check_workers(timeout: float) -> list[str]:
    """Ping the workers, at most once every MODELHUB_HEALTH_WORKER_CACHE_SECONDS per process."""
    from django.core.cache import cache

    cached = cache.get(WORKER_PING_CACHE_KEY)
    if cached is not None:
        return cached
    workers = _ping_workers(timeout)
    cache.set(WORKER_PING_CACHE_KEY, workers, settings.MODELHUB_HEALTH_WORKER_CACHE_SECONDS)
    return workers


def _ping_workers(timeout: float) -> list[str]:
    from modelhub.celery import app

    replies = app.control.ping(timeout=timeout) or []
    workers = sorted(name for reply in replies for name in reply)
    if not workers:
        raise RuntimeError(
            f"no Celery worker answered a ping within {timeout}s. Start one with "
            "`celery -A modelhub worker -Q default,training,assembly` (make run starts one). "
            "A worker busy with a long job answers once the job ends."
        )
    return workers


WORKER_PING_CACHE_KEY = "modelhub:health:workers"


def health_report(*, worker_timeout: float = 1.0, details: bool = True) -> dict:
    """Return the status of the database, broker, artifact storage and workers.

    With ``details=False`` (anonymous callers) only ``{"status": "ok" | "degraded"}``: paths,
    addresses and host names are for staff and token holders.
    """
    checks = {
        "database": _timed(_check_database),
        "broker": _timed(_check_broker),
        "storage": _timed(_check_storage),
    }
    checks["worker"] = (
        _timed(lambda: _check_workers(worker_timeout))
        if checks["broker"]["ok"]
        else {
            "ok": False,
            "error": "broker unreachable, so no worker can answer",
        }
    )
    ok = all(check["ok"] for check in checks.values())
    if not details:
        return {"status": "ok" if ok else "degraded"}
    return {"status": "ok" if ok else "degraded", **checks}


def probe_enqueue() -> WorkerProbe:
    """Create a probe row and queue a task that a worker answers by updating it."""
    with transaction.atomic():
        probe = WorkerProbe.objects.create()
        queue_on_commit("core.answer_probe", probe.pk)
    return probe
