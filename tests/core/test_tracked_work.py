"""One claim/finish path for all tracked work: redelivery, repeated loss, guards, the reaper."""

from datetime import timedelta

import pytest
from django.utils import timezone

from core.models import WorkerProbe
from core.tracked_work import (
    WORKER_KILLED_TWICE_MESSAGE,
    WORKER_LOST_MESSAGE,
    reap_stale_work,
    row_claim,
    run_tracked,
    tracked_models,
    work_guard,
    work_heartbeat,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_every_worker_tracked_model_shares_the_lifecycle_fields():
    labels = {model._meta.label for model in tracked_models()}
    assert labels == {
        "backbones.BackboneVersion",
        "heads.HeadVersion",
        "heads.ModelImport",
        "training.Dataset",
        "training.Job",
        "assemblies.Assembly",
        "assemblies.AssemblyExport",
        "mlflow_api.FullModelArtifact",
        "assemblies.Prediction",
        "releases.WebhookDelivery",
        "core.WorkerProbe",
    }
    for model in tracked_models():
        names = {field.name for field in model._meta.get_fields()}
        assert {"status", "error", "created_by", "created_at", "started_at", "finished_at"} <= names
        assert {"attempts", "worker", "heartbeat_at"} <= names
        statuses = set(model.Status.values)
        assert model.WAITING and set(model.WAITING) <= statuses, model
        assert model.WORKING and set(model.WORKING) <= statuses, model
        assert model.LOST in statuses, model


def test_claim_counts_attempts_and_names_the_worker():
    probe = WorkerProbe.objects.create()
    claimed = row_claim(WorkerProbe, probe.pk)
    assert claimed.status == "running" and claimed.attempts == 1
    assert claimed.worker and claimed.heartbeat_at is not None and claimed.started_at is not None


def test_redelivered_message_for_a_claimed_row_is_worker_lost_and_never_runs_twice():
    probe = WorkerProbe.objects.create()
    ran = []
    run_tracked(WorkerProbe, probe.pk, lambda row: ran.append(row.pk) or None)  # dies: stays running
    assert ran == [probe.pk]
    assert run_tracked(WorkerProbe, probe.pk, lambda row: ran.append("again")) is None
    assert ran == [probe.pk]
    probe.refresh_from_db()
    assert (probe.status, probe.error) == ("failed", WORKER_LOST_MESSAGE)


def test_work_that_killed_the_worker_twice_says_so():
    probe = WorkerProbe.objects.create()
    row_claim(WorkerProbe, probe.pk)
    row_claim(WorkerProbe, probe.pk)  # first loss recorded
    WorkerProbe.objects.filter(pk=probe.pk).update(status="queued")  # requested again
    row_claim(WorkerProbe, probe.pk)  # attempt 2 ... and the worker dies again
    assert row_claim(WorkerProbe, probe.pk) is None
    probe.refresh_from_db()
    assert probe.status == "failed" and probe.error == WORKER_KILLED_TWICE_MESSAGE
    assert "out of memory" in probe.error and "not retried automatically" in probe.error


def test_redelivered_message_for_a_finished_row_is_a_no_op():
    probe = WorkerProbe.objects.create(status=WorkerProbe.Status.ANSWERED, worker="w1")
    assert row_claim(WorkerProbe, probe.pk) is None
    probe.refresh_from_db()
    assert (probe.status, probe.worker) == ("answered", "w1")


@pytest.mark.parametrize("error", [MemoryError(), RuntimeError("boom"), KeyError("x")])
def test_any_exception_ends_the_row_with_a_message(error):
    probe = WorkerProbe.objects.create()

    def work(row):
        raise error

    run_tracked(WorkerProbe, probe.pk, work)  # never raises: a worker never dies of an input
    probe.refresh_from_db()
    assert probe.status == "failed" and probe.finished_at is not None
    assert ("ran out of memory" if isinstance(error, MemoryError) else type(error).__name__) in probe.error


def test_guard_leaves_a_finished_row_alone():
    probe = WorkerProbe.objects.create()
    row = row_claim(WorkerProbe, probe.pk)
    with work_guard(row):
        WorkerProbe.objects.filter(pk=row.pk).update(status="answered")
        raise RuntimeError("after the finish")
    probe.refresh_from_db()
    assert probe.status == "answered"


def test_reaper_fails_only_rows_silent_for_longer_than_the_time_limit(settings):
    settings.CELERY_TASK_TIME_LIMIT = 60
    settings.MODELHUB_REAPER_MARGIN = 30
    silent = row_claim(WorkerProbe, WorkerProbe.objects.create().pk)
    alive = row_claim(WorkerProbe, WorkerProbe.objects.create().pk)
    queued = WorkerProbe.objects.create()  # waiting in the queue is not a loss
    old = timezone.now() - timedelta(seconds=120)
    WorkerProbe.objects.filter(pk__in=[silent.pk, alive.pk]).update(heartbeat_at=old, started_at=old)
    WorkerProbe.objects.filter(pk=queued.pk).update(created_at=old)
    work_heartbeat(alive, force=True)  # a long task that still beats
    assert reap_stale_work() == {"core.WorkerProbe": 1}
    statuses = dict(WorkerProbe.objects.values_list("pk", "status"))
    assert statuses == {silent.pk: "failed", alive.pk: "running", queued.pk: "queued"}
    assert "time limit (90 s)" in WorkerProbe.objects.get(pk=silent.pk).error
    assert reap_stale_work() == {}
