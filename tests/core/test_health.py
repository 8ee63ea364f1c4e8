"""GET /api/health/ and the start-up check report each dependency, clearly, without a traceback."""

import subprocess
import sys

import pytest

from modelhub.celery import app
from tests.conftest import REPO_ROOT, free_port

pytestmark = pytest.mark.django_db(transaction=True)


def test_health_reports_all_parts_ok_with_a_live_worker(api_client_for, celery_worker):
    response = api_client_for("ops").get("/api/health/")  # a token holder sees the details
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok"
    assert body["database"]["ok"] and body["storage"]["ok"] and body["broker"]["ok"]
    assert celery_worker.worker_name in body["worker"]["detail"]


def test_anonymous_health_answers_only_the_status(client, settings, celery_worker):
    response = client.get("/api/health/")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    text = response.content.decode()
    for secret in (str(settings.MODELHUB_HOME), settings.CELERY_BROKER_URL, celery_worker.worker_name, "postgres"):
        assert secret not in text


def test_health_pings_workers_at_most_once_per_cache_window_and_never_writes(client, settings, monkeypatch):
    from django.core.cache import cache

    from core import services

    cache.delete(services.WORKER_PING_CACHE_KEY)
    settings.MODELHUB_HEALTH_WORKER_CACHE_SECONDS = 60
    pings = []
    monkeypatch.setattr(services, "_ping_workers", lambda timeout: pings.append(timeout) or ["w@host"])
    root = services.settings.MODELHUB_ARTIFACT_ROOT
    before = sorted(p.name for p in root.rglob("*")) if root.exists() else []
    for _ in range(5):
        assert client.get("/api/health/").json() == {"status": "ok"}
    assert len(pings) == 1
    after = sorted(p.name for p in root.rglob("*")) if root.exists() else []
    assert after == before  # the storage probe is read-only
    cache.delete(services.WORKER_PING_CACHE_KEY)


def test_health_reports_unreachable_broker_as_503(api_client_for, monkeypatch):
    client = api_client_for("ops")
    # Celery reads CELERY_BROKER_URL from the environment before its own config.
    dead = f"redis://127.0.0.1:{free_port()}/0"
    monkeypatch.setenv("CELERY_BROKER_URL", dead)
    original = app.conf.broker_url
    app.conf.broker_url = dead
    try:
        response = client.get("/api/health/")
    finally:
        app.conf.broker_url = original
    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "degraded"
    assert body["broker"]["ok"] is False and body["broker"]["error"]
    assert body["worker"]["ok"] is False
    assert body["database"]["ok"] is True


@pytest.mark.parametrize(
    "variable, url, part",
    [
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:{port}/modelhub", "database"),
        ("CELERY_BROKER_URL", "redis://127.0.0.1:{port}/0", "broker"),
    ],
)
def test_start_up_check_names_the_missing_server_without_traceback(variable, url, part, tmp_path):
    env = {**__import__("os").environ, variable: url.format(port=free_port()), "MODELHUB_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "manage.py", "check_services"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert f"ModelHub cannot start: {part} is unavailable" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
