"""Content-addressed blob store on both backends: dedupe, checksums, crashes, garbage collection."""

import hashlib
import os
import shutil
from datetime import timedelta

import pytest
from django.utils import timezone

from artifacts.models import Blob
from artifacts.services import (
    ChecksumMismatchError,
    artifacts_gc,
    blob_fetch_verified,
    blob_open,
    blob_store_path,
)

pytestmark = pytest.mark.django_db


def write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_identical_content_is_stored_once(blob_store, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)  # several chunks
    first = blob_store_path(path=write(tmp_path, "a.bin", data))
    second = blob_store_path(path=write(tmp_path, "b.bin", data))
    assert first.blob.pk == second.blob.pk
    assert (first.deduplicated, second.deduplicated) == (False, True)
    assert first.blob.sha256 == hashlib.sha256(data).hexdigest()
    assert first.blob.size_bytes == len(data)
    assert [sha for sha, _ in blob_store.iter_blobs()] == [first.blob.sha256]
    with blob_open(blob=first.blob) as stream:
        assert stream.read() == data


def test_verified_fetch_detects_a_corrupted_blob(blob_store, tmp_path):
    stored = blob_store_path(path=write(tmp_path, "good.bin", b"weights" * 1000))
    out = blob_fetch_verified(blob=stored.blob, destination=tmp_path / "copy.bin")
    assert out.read_bytes() == b"weights" * 1000
    # Corrupt the stored bytes behind the row's back.
    blob_store.put_file(stored.blob.sha256, write(tmp_path, "evil.bin", b"tampered"))
    with pytest.raises(ChecksumMismatchError, match="is corrupt"):
        blob_fetch_verified(blob=stored.blob, destination=tmp_path / "copy2.bin")
    assert not (tmp_path / "copy2.bin").exists()


def test_interrupted_write_leaves_no_row_and_no_blob(blob_store, tmp_path, monkeypatch):
    path = write(tmp_path, "big.bin", os.urandom(2 * 1024 * 1024))
    real_put = type(blob_store).put_file

    def crash_during_put(self, sha256, source):
        raise ConnectionError("connection reset by peer")

    monkeypatch.setattr(type(blob_store), "put_file", crash_during_put)
    with pytest.raises(ConnectionError):
        blob_store_path(path=path)
    monkeypatch.setattr(type(blob_store), "put_file", real_put)
    assert Blob.objects.count() == 0
    assert list(blob_store.iter_blobs()) == []


def test_filesystem_put_is_atomic_when_the_copy_fails(settings, tmp_path, monkeypatch):
    from artifacts.stores import FilesystemBlobStore

    store = FilesystemBlobStore(tmp_path / "store")
    source = write(tmp_path, "src.bin", os.urandom(3 * 1024 * 1024))
    calls = {"n": 0}
    real_copy = shutil.copyfileobj

    def copy_then_fail(src, dst, length):
        dst.write(src.read(length))
        calls["n"] += 1
        raise OSError("disk full")

    monkeypatch.setattr("artifacts.stores.shutil.copyfileobj", copy_then_fail)
    with pytest.raises(OSError, match="disk full"):
        store.put_file("ab" * 32, source)
    monkeypatch.setattr("artifacts.stores.shutil.copyfileobj", real_copy)
    assert calls["n"] == 1
    assert not store.exists("ab" * 32)
    assert list(store.tmp.iterdir()) == []


def test_gc_never_deletes_a_blob_younger_than_the_longest_task(blob_store, tmp_path, settings):
    import time

    settings.CELERY_TASK_TIME_LIMIT = 7200
    settings.MODELHUB_REAPER_MARGIN = 600
    # A task running for an hour stored this blob (row and file) and has not registered it yet.
    in_flight = blob_store_path(path=write(tmp_path, "in-flight.bin", b"a model a job is still training"))
    hour_ago = time.time() - 3600
    Blob.objects.filter(pk=in_flight.blob.pk).update(created_at=timezone.now() - timedelta(hours=1))
    root = getattr(blob_store, "root", None)  # S3 objects cannot be aged; their mtime is now
    for path in root.rglob(in_flight.blob.sha256) if root else []:
        os.utime(path, (hour_ago, hour_ago))
    report = artifacts_gc(grace=timedelta(minutes=5))  # asked for less than the task may still run
    assert (report.rows_deleted, report.blobs_deleted) == (0, 0)
    assert Blob.objects.filter(pk=in_flight.blob.pk).exists()


def test_gc_removes_only_unreferenced_blobs_past_the_grace_period(blob_store, tmp_path, make_member, settings):
    from artifacts.models import Upload
    from teams.models import Team

    user, _ = make_member("gc-user")
    kept = blob_store_path(path=write(tmp_path, "kept.bin", b"kept"))
    Upload.objects.create(team=Team.objects.get(slug="vision"), blob=kept.blob, filename="kept.bin", created_by=user)
    unreferenced_row = blob_store_path(path=write(tmp_path, "row.bin", b"row without users"))
    orphan_sha = hashlib.sha256(b"orphan").hexdigest()
    blob_store.put_file(orphan_sha, write(tmp_path, "orphan.bin", b"orphan"))

    # Within the grace period nothing is touched (an upload may be in flight).
    report = artifacts_gc(grace=timedelta(hours=1))
    assert (report.rows_deleted, report.blobs_deleted) == (0, 0)

    settings.CELERY_TASK_TIME_LIMIT = 0  # no task may still hold these blobs
    settings.MODELHUB_REAPER_MARGIN = -60
    report = artifacts_gc(grace=timedelta(seconds=-60))
    assert (report.rows_deleted, report.blobs_deleted) == (1, 2)
    assert list(Blob.objects.values_list("sha256", flat=True)) == [kept.blob.sha256]
    assert {sha for sha, _ in blob_store.iter_blobs()} == {kept.blob.sha256}
    assert not Blob.objects.filter(pk=unreferenced_row.blob.pk).exists()
