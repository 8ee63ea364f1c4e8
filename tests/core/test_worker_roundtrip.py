"""A task queued over the broker (Redis in `make test`) runs in a separate worker process."""

import pytest
from django.core.management import call_command

from core.models import WorkerProbe
from core.services import probe_enqueue
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_worker_process_answers_probe_and_writes_to_db(celery_worker, settings):
    assert celery_worker.pid != __import__("os").getpid()
    probe = probe_enqueue()

    def answered():
        probe.refresh_from_db()
        return probe.status == WorkerProbe.Status.ANSWERED

    wait_until(answered, timeout=30, message="the worker to answer the probe")
    assert celery_worker.worker_name in probe.worker
    assert probe.started_at is not None and probe.finished_at >= probe.started_at


def test_probe_worker_command_reports_the_worker(celery_worker, capsys):
    call_command("probe_worker", "--timeout", "30")
    assert "answered probe" in capsys.readouterr().out
