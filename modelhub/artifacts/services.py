"""Writes and verified reads of content-addressed blobs.

Order of a write: hash the file in chunks, put it in the store (temp then commit), and only
then create the row. A crash in between leaves at worst a blob without a row, which
`manage.py gc_artifacts` removes.
"""

import hashlib
import os
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.utils import timezone

from modelhub.artifacts.models import Blob, Upload
from modelhub.artifacts.stores import CHUNK_BYTES, get_blob_store
from modelhub.core.errors import ApplicationError
from modelhub.teams.models import Team


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


def blob_store_path(*, path: Path) -> StoredBlob:
    """Store a local file as a blob (deduplicated by sha256) and return its row."""
    sha256, size = sha256_of_path(Path(path))
    store = get_blob_store()
    existing = Blob.objects.filter(sha256=sha256).first()
    if existing is not None and store.exists(sha256):
        return StoredBlob(blob=existing, deduplicated=True)
    store.put_file(sha256, Path(path))
    try:
        with transaction.atomic():
            blob, created = Blob.objects.get_or_create(sha256=sha256, defaults={"size_bytes": size})
    except IntegrityError:  # a concurrent writer created the row first
        blob, created = Blob.objects.get(sha256=sha256), False
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
    """Delete rows nothing references and stored blobs with no row, older than `grace`.

    The grace period protects work in flight: an upload's or a long task's blob is written
    before the row that references it. It is never shorter than the longest task may run
    (:func:`minimum_gc_grace`).
    """
    grace = max(grace, minimum_gc_grace())
    cutoff = timezone.now() - grace
    store = get_blob_store()
    rows_deleted = 0
    for blob in Blob.objects.filter(created_at__lt=cutoff).iterator():
        if not _blob_is_referenced(blob):
            rows_deleted += 1
            if not dry_run:
                blob.delete()
    known = set(Blob.objects.values_list("sha256", flat=True))
    blobs_deleted = 0
    for sha256, modified in list(store.iter_blobs()):
        if sha256 in known or modified > cutoff:
            continue
        blobs_deleted += 1
        if not dry_run:
            store.delete(sha256)
    return GcReport(rows_deleted=rows_deleted, blobs_deleted=blobs_deleted)
