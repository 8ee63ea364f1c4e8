"""GET /metrics (the metrics app): who may read it, and what it carries, parsed as Prometheus parses it.

In-process first (single-process registry): the permission rules, requests by route pattern and
status, tracked work by kind and status with durations, predictions by assembly and task, queue
depth and the heartbeat age, each checked against rows made here. Then a live gunicorn with two
worker processes (prometheus-client's multiprocess mode, set up by gunicorn.conf.py): the
request counts of both processes appear, added up, in one answer.
"""

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import requests
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from assemblies.models import Prediction
from heads.models import HeadVersion
from tests.view_helpers import assembly_row, backbone_row, head_row


def samples(text: str) -> dict:
    """Return {(sample name, frozenset of labels): value} of an exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict, name: str, **labels) -> float | None:
    return found.get((name, frozenset(labels.items())))


@pytest.fixture
def staff(make_member):
    from rest_framework.test import APIClient

    user, token = make_member("sam", role="member")
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.mark.django_db
def test_staff_read_it_members_get_403_anonymous_401_unless_public(staff, api_client_for, client, settings):
    answer = staff.get("/metrics", HTTP_ACCEPT="text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
    assert answer.status_code == 200 and answer["Content-Type"].startswith("text/plain; version=0.0.4")
    member = api_client_for("mia", role="admin")  # a team admin is not staff
    assert member.get("/metrics").status_code == 403
    refused = client.get("/metrics", HTTP_ACCEPT="text/plain")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "not_authenticated"
    settings.MODELHUB_METRICS_PUBLIC = True
    assert client.get("/metrics").status_code == 200


@pytest.mark.django_db
def test_requests_by_route_tracked_work_predictions_queues_and_heartbeat(staff, api_client_for):
    author = api_client_for("alice")
    backbone = backbone_row(author.user)
    head = head_row(author.user, backbone, task="sentiment", status=HeadVersion.Status.APPROVED)
    assembly = assembly_row(author.user, backbone, [head])
    before = samples(staff.get("/metrics").content.decode())
    route = {"route": "api/assemblies/<int:pk>/", "method": "GET"}
    done = value(before, "modelhub_http_requests_total", status="200", **route) or 0
    missing = value(before, "modelhub_http_requests_total", status="404", **route) or 0
    assert author.get(f"/api/assemblies/{assembly.pk}/").status_code == 200
    assert author.get("/api/assemblies/987654/").status_code == 404
    now = timezone.now()
    for seconds, status in ((2, "succeeded"), (40, "succeeded"), (1, "failed")):
        Prediction.objects.create(
            assembly=assembly, task_id=0, inputs=[[0.5] * 8], status=status, worker="w:1",
            started_at=now - timedelta(seconds=seconds + 30), finished_at=now - timedelta(seconds=30),
            heartbeat_at=now - timedelta(seconds=seconds + 30),
        )  # fmt: skip

    found = samples(staff.get("/metrics").content.decode())
    assert value(found, "modelhub_http_requests_total", status="200", **route) == done + 1
    assert value(found, "modelhub_http_requests_total", status="404", **route) == missing + 1
    assert value(found, "modelhub_http_request_duration_seconds_count", status="200", **route) == done + 1
    assert value(found, "modelhub_tracked_work", kind="prediction", status="succeeded") == 2
    assert value(found, "modelhub_tracked_work", kind="assembly", status="ready") == 1
    histogram = {"kind": "prediction", "status": "succeeded"}
    assert value(found, "modelhub_tracked_work_duration_seconds_count", **histogram) == 2
    assert value(found, "modelhub_tracked_work_duration_seconds_bucket", le="5.0", **histogram) == 1
    assert value(found, "modelhub_tracked_work_duration_seconds_bucket", le="60.0", **histogram) == 2
    assert value(found, "modelhub_tracked_work_duration_seconds_sum", **histogram) == pytest.approx(42.0)
    labels = {"assembly": str(assembly.pk), "task": "sentiment"}
    assert value(found, "modelhub_predictions_total", status="succeeded", **labels) == 2
    assert value(found, "modelhub_predictions_total", status="failed", **labels) == 1
    assert 29 <= value(found, "modelhub_worker_heartbeat_age_seconds") < 120  # the last finish, 30 s ago
    assert value(found, "modelhub_broker_up") == 1
    assert {queue for (name, labels), _ in found.items() if name == "modelhub_queue_depth" for _, queue in labels} >= {
        "default", "training", "assembly",
    }  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_live_gunicorn_adds_up_both_processes(make_member, tmp_path):
    from tests.api.live_app import flush_redis, isolated_env, live_server

    env = isolated_env()
    flush_redis(env["CELERY_BROKER_URL"])
    user, token = make_member("sam")
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    headers = {"Authorization": f"Token {token}"}
    with live_server(env, tmp_path / "gunicorn.log") as url:
        route = {"route": "v2/health/live", "method": "GET", "status": "200"}
        session = requests.Session()

        def scrape() -> dict:
            answer = session.get(f"{url}/metrics", headers=headers, timeout=60)
            assert answer.status_code == 200, answer.text
            return samples(answer.text)

        start = value(scrape(), "modelhub_http_requests_total", **route) or 0
        sent = 0
        with ThreadPoolExecutor(max_workers=8) as pool:
            for _ in range(10):  # concurrent bursts until both processes have answered some
                statuses = list(
                    pool.map(lambda _: requests.get(f"{url}/v2/health/live", timeout=60).status_code, range(16))
                )
                assert statuses == [200] * 16
                sent += 16
                found = scrape()
                per_process = {
                    dict(labels)["pid"]: number
                    for (name, labels), number in found.items()
                    if name == "modelhub_web_process_requests"
                }
                if len([n for n in per_process.values() if n > 0]) >= 2:
                    break
    assert len(per_process) == 2, per_process  # one series per live worker process
    assert all(number > 0 for number in per_process.values()), per_process
    # The counter adds up both processes: every 200 sent since the first scrape is there.
    assert value(found, "modelhub_http_requests_total", **route) == start + sent
    assert sum(per_process.values()) >= sent
