"""Writes and verified reads of content-addressed blobs.

Order of a write: hash the file in chunks, put it in the store (temp then commit), and only
then create the row. A crash in between leaves at worst a blob without a row, which
`manage.py gc_artifacts` removes.
"""

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, connection, transaction
from django.db.models import ProtectedError
from django.utils import timezone

from artifacts.models import Blob, Upload
from artifacts.stores import CHUNK_BYTES, get_blob_store
from core.errors import ApplicationError
from teams.models import Team


class ChecksumMismatchError(ApplicationError):
    status_code = 500
    code = "checksum_mismatch"


@dataclass(frozen=True)
class StoredBlob:
    blob: Blob
    deduplicated: bool


def sha256_of_path(path: Path) -> tuple[str, int]:
    """Return (sha256 hex, size in bytes) of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


# The first key of the PostgreSQL advisory locks that blob writers and gc share ("mh").
BLOB_LOCK_NAMESPACE = 0x6D68


@contextlib.contextmanager
def blob_lock(*, sha256: str) -> Iterator[None]:
    """Hold the lock that blob writers and gc share for one sha256 until the block ends.

    The block runs in a transaction. PostgreSQL: a transaction-level advisory lock on
    (BLOB_LOCK_NAMESPACE, 32 bits of the sha256), so writers of other blobs never wait. SQLite:
    its one write lock (settings begin transactions IMMEDIATE; a no-op write takes it otherwise).
    Any other database: a row lock on the blob's row, where there is one.
    """
    with transaction.atomic():
        vendor = connection.vendor
        with connection.cursor() as cursor:
            if vendor == "postgresql":
                key = int(sha256[:8], 16) - 2**31  # a signed 32-bit integer
                cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [BLOB_LOCK_NAMESPACE, key])
            elif vendor == "sqlite":
                cursor.execute(f"UPDATE {Blob._meta.db_table} SET sha256 = sha256 WHERE 1 = 0")
        if vendor not in ("postgresql", "sqlite"):
            list(Blob.objects.select_for_update().filter(sha256=sha256).values_list("pk", flat=True))
        yield


def blob_store_path(*, path: Path) -> StoredBlob:
    """Store a local file as a blob (deduplicated by sha256) and return its row.

    The bytes are put outside any lock (a large put never holds one). Then, under blob_lock, the
    stored bytes are checked again (gc may have removed an old copy in between: put again) and
    the row is created, or marked used now when it exists: gc's age check reads last_used_at and
    its delete re-checks under the same lock, so a blob reused here is never collected before
    the caller's reference (an upload, a head) exists.
    """
    path = Path(path)
    sha256, size = sha256_of_path(path)
    store = get_blob_store()
    if not (Blob.objects.filter(sha256=sha256).exists() and store.exists(sha256)):
        store.put_file(sha256, path)
    with blob_lock(sha256=sha256):
        if not store.exists(sha256):
            store.put_file(sha256, path)
        blob, created = Blob.objects.get_or_create(sha256=sha256, defaults={"size_bytes": size})
        if not created:
            blob.last_used_at = timezone.now()
            Blob.objects.filter(pk=blob.pk).update(last_used_at=blob.last_used_at)
    return StoredBlob(blob=blob, deduplicated=not created)


def blob_store_uploaded_file(*, file: UploadedFile) -> StoredBlob:
    """Store an uploaded file (streamed to a temp file by the upload handler) as a blob."""
    if hasattr(file, "temporary_file_path"):
        return blob_store_path(path=Path(file.temporary_file_path()))
    with tempfile.NamedTemporaryFile(dir=settings.FILE_UPLOAD_TEMP_DIR, suffix=".upload") as tmp:
        for chunk in file.chunks(CHUNK_BYTES):
            tmp.write(chunk)
        tmp.flush()
        return blob_store_path(path=Path(tmp.name))


def blob_store_bytes(*, data: bytes) -> StoredBlob:
    """Store a small in-memory byte string (manifests, reports) as a blob."""
    with tempfile.NamedTemporaryFile(dir=settings.FILE_UPLOAD_TEMP_DIR, suffix=".bytes") as tmp:
        tmp.write(data)
        tmp.flush()
        return blob_store_path(path=Path(tmp.name))


def blob_discard_stored(*, blob: Blob) -> None:
    """Remove a blob's stored bytes found damaged, keeping its row: the next store of the same
    content (by sha256) writes it again instead of deduplicating onto the damaged copy."""
    get_blob_store().delete(blob.sha256)


def blob_open(*, blob: Blob) -> IO[bytes]:
    """Return a chunked-read stream of the blob (downloads; clients check the ETag)."""
    return get_blob_store().open(blob.sha256)


def blob_fetch_verified(*, blob: Blob, destination: Path) -> Path:
    """Copy the blob to a local file for model work, verifying its sha256 on the way.

    Raises ChecksumMismatchError (and removes the partial file) when the stored bytes do not
    hash to the row's sha256, e.g. after corruption or tampering in the store.
    """
    destination = Path(destination)
    digest = hashlib.sha256()
    with get_blob_store().open(blob.sha256) as src, open(destination, "wb") as dst:
        while chunk := src.read(CHUNK_BYTES):
            digest.update(chunk)
            dst.write(chunk)
    if digest.hexdigest() != blob.sha256:
        destination.unlink(missing_ok=True)
        raise ChecksumMismatchError(
            f"Artifact {blob.sha256[:12]} is corrupt: its stored bytes hash to "
            f"{digest.hexdigest()[:12]}, expected {blob.sha256[:12]}. Re-upload the file; "
            "an admin should check the artifact store.",
            detail={"expected": blob.sha256, "actual": digest.hexdigest()},
        )
    return destination


def upload_create(*, team: Team, user: AbstractBaseUser, file: UploadedFile) -> tuple[Upload, bool]:
    """Store an uploaded file for a team; return (upload row, whether THIS team already had it).

    Blobs are shared across teams, but whether another team stored the same bytes is never
    revealed: `deduplicated` is per team.
    """
    stored = blob_store_uploaded_file(file=file)
    already = Upload.objects.filter(team=team, blob=stored.blob).exists()
    upload = Upload(team=team, blob=stored.blob, filename=os.path.basename(file.name or "upload"), created_by=user)
    upload.full_clean()
    upload.save()
    return upload, already


def _blob_is_referenced(blob: Blob) -> bool:
    """Return whether any row of any model points at this blob.

    A model that derives data from a blob names that field in `GC_DERIVED_FROM`: such a row
    does not keep its source blob alive (it is deleted with it).
    """
    for relation in Blob._meta.related_objects:
        if getattr(relation.related_model, "GC_DERIVED_FROM", None) == relation.field.name:
            continue
        if relation.related_model._default_manager.filter(**{relation.field.name: blob}).exists():
            return True
    return False


@dataclass(frozen=True)
class GcReport:
    rows_deleted: int
    blobs_deleted: int


def minimum_gc_grace() -> timedelta:
    """The longest a task may hold a blob before registering it: time limit + reaper margin."""
    return timedelta(seconds=int(settings.CELERY_TASK_TIME_LIMIT) + int(settings.MODELHUB_REAPER_MARGIN))


def artifacts_gc(*, grace: timedelta = timedelta(hours=1), dry_run: bool = False) -> GcReport:
    """Delete rows nothing references and stored blobs with no row, unused for longer than `grace`.

    The grace period protects work in flight: an upload's or a long task's blob is written
    before the row that references it. It is never shorter than the longest task may run
    (:func:`minimum_gc_grace`). Rows are aged by last_used_at (a reuse refreshes it) and stored
    blobs by their modification time. Everything is listed first and each deletion re-checks
    under blob_lock, which blob_store_path holds while it reuses or registers a blob, so an upload
    that starts to use a listed blob in between keeps it.
    """
    grace = max(grace, minimum_gc_grace())
    cutoff = timezone.now() - grace
    store = get_blob_store()
    rows_deleted = 0
    candidates = Blob.objects.filter(last_used_at__lt=cutoff).order_by("pk").values_list("pk", "sha256")
    for pk, sha256 in list(candidates):
        if dry_run:
            rows_deleted += not _blob_is_referenced(Blob(pk=pk, sha256=sha256))
        else:
            rows_deleted += gc_delete_row(pk=pk, sha256=sha256, cutoff=cutoff)
    known = set(Blob.objects.values_list("sha256", flat=True))
    blobs_deleted = 0
    for sha256, modified in list(store.iter_blobs()):
        if sha256 in known or modified > cutoff:
            continue
        if dry_run:
            blobs_deleted += 1
        else:
            blobs_deleted += gc_delete_stored(sha256=sha256, cutoff=cutoff)
    return GcReport(rows_deleted=rows_deleted, blobs_deleted=blobs_deleted)


def gc_delete_row(*, pk: int, sha256: str, cutoff) -> bool:
    """Delete a listed blob row if, under blob_lock, it is still unused since `cutoff` and unreferenced."""
    with blob_lock(sha256=sha256):
        blob = Blob.objects.select_for_update().filter(pk=pk, last_used_at__lt=cutoff).first()
        if blob is None or _blob_is_referenced(blob):
            return False
        try:
            with transaction.atomic():
                blob.delete()
        except (ProtectedError, IntegrityError):  # a reference committed since the check
            return False
        return True


def gc_delete_stored(*, sha256: str, cutoff) -> bool:
    """Delete listed stored bytes if, under blob_lock, they still have no row and were not written since `cutoff`."""
    store = get_blob_store()
    with blob_lock(sha256=sha256):
        if Blob.objects.filter(sha256=sha256).exists():
            return False
        modified = store.modified(sha256)
        if modified is None or modified > cutoff:
            return False
        store.delete(sha256)
        return True
