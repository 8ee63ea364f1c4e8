"""gc_artifacts against uploads that reuse the blobs it has listed: real threads, the real database.

gc lists old unreferenced rows and row-less stored blobs first and deletes each later. An upload
that stores the same bytes in between must keep its blob (row and bytes); an old unreferenced blob
nobody reuses must still go. The interleavings are forced with events at gc's delete step and
inside the upload's lock, never with sleeps.
"""

import contextlib
import hashlib
import os
import threading
import time
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, connections
from django.utils import timezone

from artifacts import services
from artifacts.models import Blob, Upload
from artifacts.services import artifacts_gc, blob_fetch_verified, blob_store_path, upload_create
from artifacts.stores import get_blob_store
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

TWO_DAYS = timedelta(days=2)


@pytest.fixture
def store(settings, tmp_path):
    """The filesystem store under tmp_path, and gc's grace exactly what a test asks for."""
    settings.MODELHUB_ARTIFACT_BACKEND = "filesystem"
    settings.MODELHUB_ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.CELERY_TASK_TIME_LIMIT = 0
    settings.MODELHUB_REAPER_MARGIN = 0
    get_blob_store.cache_clear()
    yield get_blob_store()
    get_blob_store.cache_clear()


class Worker(threading.Thread):
    """A thread with its own database connection that keeps its result or its exception."""

    def __init__(self, name: str, target):
        super().__init__(name=name, daemon=True)
        self.target, self.result, self.error = target, None, None

    def run(self):
        try:
            self.result = self.target()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc
        finally:
            connections.close_all()

    def outcome(self, timeout: float = 60):
        self.join(timeout)
        assert not self.is_alive(), f"thread {self.name} did not finish within {timeout}s"
        if self.error is not None:
            raise self.error
        return self.result


def old_blob(store, tmp_path, data: bytes, *, with_row: bool = True) -> str:
    """Store `data` as a blob (row optional) that nobody has used for two days; return its sha256."""
    sha256 = hashlib.sha256(data).hexdigest()
    source = tmp_path / f"{sha256[:8]}.bin"
    source.write_bytes(data)
    if with_row:
        blob_store_path(path=source)
        long_ago = timezone.now() - TWO_DAYS
        Blob.objects.filter(sha256=sha256).update(created_at=long_ago, last_used_at=long_ago)
    else:
        store.put_file(sha256, source)
    then = time.time() - TWO_DAYS.total_seconds()
    os.utime(store._path(sha256), (then, then))
    return sha256


def paused_before(monkeypatch, name: str, *, only: str | None = None):
    """Make services.<name> wait (after `reached` is set) until `go` is set; return (reached, go)."""
    real = getattr(services, name)
    reached, go = threading.Event(), threading.Event()

    def wrapper(**kwargs):
        if only is None or kwargs.get("sha256") == only:
            reached.set()
            assert go.wait(30), f"the test never let {name} go on"
        return real(**kwargs)

    monkeypatch.setattr(services, name, wrapper)
    return reached, go


def upload(team, user, data: bytes, name: str) -> Upload:
    return upload_create(team=team, user=user, file=SimpleUploadedFile(name, data))[0]


def assert_blob_intact(sha256: str, data: bytes, tmp_path) -> None:
    blob = Blob.objects.get(sha256=sha256)
    copy = blob_fetch_verified(blob=blob, destination=tmp_path / f"check-{sha256[:8]}")
    assert copy.read_bytes() == data


@pytest.fixture
def member(make_member):
    from teams.models import Team

    user, _ = make_member("uploader")
    return Team.objects.get(slug="vision"), user


def test_reusing_a_blob_refreshes_its_last_use(store, tmp_path):
    data = b"weights nobody touched for two days"
    sha256 = old_blob(store, tmp_path, data)
    before = timezone.now()
    stored = blob_store_path(path=tmp_path / f"{sha256[:8]}.bin")
    assert stored.deduplicated
    assert Blob.objects.get(sha256=sha256).last_used_at >= before
    assert artifacts_gc(grace=timedelta(hours=1)).rows_deleted == 0


def test_an_upload_reusing_a_listed_blob_keeps_it_and_gc_still_collects_the_rest(store, tmp_path, member, monkeypatch):
    team, user = member
    reused_data, forgotten_data, orphan_data = b"an old head", b"an old head nobody wants", b"bytes with no row"
    reused = old_blob(store, tmp_path, reused_data)
    forgotten = old_blob(store, tmp_path, forgotten_data)
    orphan = old_blob(store, tmp_path, orphan_data, with_row=False)
    # gc has listed every old unreferenced row and stops before deleting the reused one.
    listed, go = paused_before(monkeypatch, "gc_delete_row", only=reused)
    gc = Worker("gc", lambda: artifacts_gc(grace=timedelta(hours=1)))
    gc.start()
    assert listed.wait(30), "gc never reached its delete step"
    # An upload reuses the listed row (refreshing it) and gc deletes before the upload's row exists.
    source = tmp_path / "again.bin"
    source.write_bytes(reused_data)
    stored = blob_store_path(path=source)
    assert stored.deduplicated
    go.set()
    report = gc.outcome()
    made = Upload.objects.create(team=team, blob=stored.blob, filename="head.keras", created_by=user)

    assert (report.rows_deleted, report.blobs_deleted) == (1, 2)  # the forgotten row; its bytes and the orphan
    assert Upload.objects.get(pk=made.pk).blob.sha256 == reused
    assert_blob_intact(reused, reused_data, tmp_path)
    assert not Blob.objects.filter(sha256=forgotten).exists()
    assert {sha for sha, _ in store.iter_blobs()} == {reused}
    assert not store.exists(forgotten) and not store.exists(orphan)


def test_an_upload_of_bytes_gc_listed_as_orphans_keeps_them(store, tmp_path, member, monkeypatch):
    team, user = member
    data = b"bytes whose row gc removed long ago"
    sha256 = old_blob(store, tmp_path, data, with_row=False)
    listed, go = paused_before(monkeypatch, "gc_delete_stored", only=sha256)
    gc = Worker("gc", lambda: artifacts_gc(grace=timedelta(hours=1)))
    gc.start()
    assert listed.wait(30), "gc never reached its delete step"
    made = upload(team, user, data, "head.keras")  # no row: stores the bytes again and makes the row
    go.set()
    report = gc.outcome()

    assert (report.rows_deleted, report.blobs_deleted) == (0, 0)
    assert Upload.objects.get(pk=made.pk).blob.sha256 == sha256
    assert_blob_intact(sha256, data, tmp_path)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="watches pg_stat_activity for the lock wait")
def test_gc_waits_for_an_upload_holding_the_blob_lock(store, tmp_path, member, monkeypatch):
    """The upload is inside its lock, about to reuse an old unreferenced blob, when gc comes to delete it."""
    team, user = member
    data = b"an old head, reused right now"
    sha256 = old_blob(store, tmp_path, data)
    real_lock = services.blob_lock
    inside, release = threading.Event(), threading.Event()

    @contextlib.contextmanager
    def lock_held_by_upload(*, sha256):
        with real_lock(sha256=sha256):
            if threading.current_thread().name == "upload":
                inside.set()
                assert release.wait(30), "the test never let the upload go on"
            yield

    monkeypatch.setattr(services, "blob_lock", lock_held_by_upload)
    uploader = Worker("upload", lambda: upload(team, user, data, "head.keras"))
    uploader.start()
    assert inside.wait(30), "the upload never took the blob lock"
    gc = Worker("gc", lambda: artifacts_gc(grace=timedelta(hours=1)))
    gc.start()

    def gc_waits_for_the_lock():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE %s",
                ["%pg_advisory_xact_lock%"],
            )
            return cursor.fetchone()[0] == 1

    wait_until(gc_waits_for_the_lock, timeout=30, interval=0.05, message="gc to wait for the upload's blob lock")
    assert gc.is_alive()
    release.set()
    made = uploader.outcome()
    report = gc.outcome()

    assert (report.rows_deleted, report.blobs_deleted) == (0, 0)
    assert Upload.objects.get(pk=made.pk).blob.sha256 == sha256
    assert_blob_intact(sha256, data, tmp_path)


def test_store_reports_when_a_blob_was_written(blob_store, tmp_path):
    sha256 = hashlib.sha256(b"dated").hexdigest()
    assert blob_store.modified(sha256) is None
    source = tmp_path / "dated.bin"
    source.write_bytes(b"dated")
    before = timezone.now() - timedelta(seconds=5)  # S3 dates have whole seconds
    blob_store.put_file(sha256, source)
    assert blob_store.modified(sha256) >= before
