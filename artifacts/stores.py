"""Blob stores: where content-addressed bytes live. Chosen by settings, never by callers.

A store only moves bytes by key. It never creates rows and never calls services.
"""

import abc
import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import IO

from django.conf import settings

CHUNK_BYTES = 1024 * 1024


def blob_key(sha256: str) -> str:
    """Return the storage key of a blob: blobs/ab/cd/<sha256>."""
    return f"blobs/{sha256[:2]}/{sha256[2:4]}/{sha256}"


class BlobStore(abc.ABC):
    """Interface every artifact backend implements."""

    name: str

    @abc.abstractmethod
    def exists(self, sha256: str) -> bool:
        """Return whether the blob is stored."""

    @abc.abstractmethod
    def put_file(self, sha256: str, path: Path) -> None:
        """Store the local file at `path` under `sha256`, atomically (all or nothing)."""

    @abc.abstractmethod
    def open(self, sha256: str) -> IO[bytes]:
        """Return a binary stream of the blob, read in chunks by the caller."""

    @abc.abstractmethod
    def delete(self, sha256: str) -> None:
        """Remove the blob; no error if it is already gone."""

    @abc.abstractmethod
    def iter_blobs(self) -> Iterator[tuple[str, datetime]]:
        """Yield (sha256, last modified) for every stored blob."""

    @abc.abstractmethod
    def modified(self, sha256: str) -> datetime | None:
        """Return when the blob was last written, or None when it is not stored (gc's re-check)."""

    @abc.abstractmethod
    def check(self) -> str:
        """Raise if the store is unusable; return a short description for /api/health/."""


class FilesystemBlobStore(BlobStore):
    """Blobs as files under a root folder; writes go to root/tmp and are renamed into place."""

    name = "filesystem"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.tmp = self.root / "tmp"

    def _path(self, sha256: str) -> Path:
        return self.root / blob_key(sha256)

    def exists(self, sha256: str) -> bool:
        return self._path(sha256).is_file()

    def put_file(self, sha256: str, path: Path) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        staging = self.tmp / f"{sha256}.{uuid.uuid4().hex}.part"
        try:
            with open(path, "rb") as src, open(staging, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK_BYTES)
                dst.flush()
                os.fsync(dst.fileno())
            final = self._path(sha256)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging, final)
        finally:
            staging.unlink(missing_ok=True)

    def open(self, sha256: str) -> IO[bytes]:
        return open(self._path(sha256), "rb")

    def delete(self, sha256: str) -> None:
        self._path(sha256).unlink(missing_ok=True)

    def iter_blobs(self) -> Iterator[tuple[str, datetime]]:
        base = self.root / "blobs"
        if not base.exists():
            return
        for path in base.glob("*/*/*"):
            if path.is_file() and len(path.name) == 64:
                yield path.name, datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)

    def modified(self, sha256: str) -> datetime | None:
        try:
            return datetime.fromtimestamp(self._path(sha256).stat().st_mtime, tz=UTC)
        except FileNotFoundError:
            return None

    def check(self) -> str:
        # Read-only: a health check must never write (it is called by anyone, often).
        existing = self.root
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent  # a fresh install: the folder is made on the first write
        if not existing.is_dir() or not os.access(existing, os.R_OK | os.W_OK | os.X_OK):
            raise RuntimeError(f"the artifact folder {self.root} is not readable and writable by this process")
        return f"filesystem at {self.root}"


class S3BlobStore(BlobStore):
    """Blobs as objects in an S3-compatible bucket, through django-storages' S3Storage.

    A PUT is atomic on S3: an object appears only once the whole upload succeeded.
    """

    name = "s3"

    def __init__(self, options: dict) -> None:
        from storages.backends.s3 import S3Storage

        self.storage = S3Storage(**options)
        self.prefix = options.get("location") or ""

    def _key(self, sha256: str) -> str:
        return blob_key(sha256)

    def _object(self, sha256: str):
        return self.storage.bucket.Object(self.storage._normalize_name(self._key(sha256)))

    def exists(self, sha256: str) -> bool:
        return self.storage.exists(self._key(sha256))

    def put_file(self, sha256: str, path: Path) -> None:
        self._object(sha256).upload_file(str(path))

    def open(self, sha256: str) -> IO[bytes]:
        return self._object(sha256).get()["Body"]

    def delete(self, sha256: str) -> None:
        self.storage.delete(self._key(sha256))

    def iter_blobs(self) -> Iterator[tuple[str, datetime]]:
        prefix = self.storage._normalize_name("blobs/")
        for summary in self.storage.bucket.objects.filter(Prefix=prefix):
            name = summary.key.rsplit("/", 1)[-1]
            if len(name) == 64:
                yield name, summary.last_modified

    def modified(self, sha256: str) -> datetime | None:
        import botocore.exceptions

        try:
            return self._object(sha256).last_modified  # a HEAD request
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def check(self) -> str:
        self.storage.connection.meta.client.head_bucket(Bucket=self.storage.bucket_name)
        return f"s3 bucket {self.storage.bucket_name}"


@lru_cache(maxsize=1)
def get_blob_store() -> BlobStore:
    """Return the store configured by settings (MODELHUB_ARTIFACT_BACKEND)."""
    if settings.MODELHUB_ARTIFACT_BACKEND == "s3":
        return S3BlobStore(settings.MODELHUB_S3)
    return FilesystemBlobStore(settings.MODELHUB_ARTIFACT_ROOT)
