"""Files in and out: stage uploads (hashed first, skipped when the team has the bytes), stream
multipart posts behind a progress bar, and download to a temporary file checked by sha256.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote

import httpx
from tqdm import tqdm

from modelhub_client.errors import ModelHubError
from modelhub_client.models import Assembly, Backbone, Head, Upload
from modelhub_client.polling import Polling

logger = logging.getLogger("modelhub_client")

PathLike = str | os.PathLike

CHUNK_BYTES = 1024 * 1024
MODEL_SUFFIX = ".keras"


def sha256_of(path: PathLike) -> str:
    """Return the hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def model_files(folder_or_paths: PathLike | Iterable[PathLike]) -> list[Path]:
    """Return the .keras files to import: a folder's, sorted by name, or the paths as given."""
    if isinstance(folder_or_paths, (str, os.PathLike)):
        folder = Path(folder_or_paths)
        if not folder.is_dir():
            raise ModelHubError(f"{folder} is not a folder. Give a folder of .keras files or a list of files.")
        paths = sorted(folder.glob(f"*{MODEL_SUFFIX}"))
        if not paths:
            raise ModelHubError(
                f"No {MODEL_SUFFIX} files in {folder}. Save each model with model.save('task.keras').",
                code="no_files",
            )
        return paths
    paths = [Path(path) for path in folder_or_paths]
    if not paths:
        raise ModelHubError("No files to import: give at least one .keras file.", code="no_files")
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise ModelHubError(f"Not a file: {', '.join(missing)}.", code="no_files")
    return paths


def _filename_from(response: httpx.Response, fallback: str) -> str:
    """Return the file name of a Content-Disposition header (RFC 6266), or the fallback."""
    header = response.headers.get("content-disposition", "")
    match = re.search(r"filename\*=UTF-8''([^;]+)", header) or re.search(r'filename="?([^";]+)"?', header)
    name = Path(unquote(match.group(1))).name if match else ""
    return name or fallback


class _ProgressReader:
    """A binary file that moves a progress bar as it is read (httpx streams multipart files this way)."""

    def __init__(self, stream: BinaryIO, bar: tqdm) -> None:
        self.stream = stream
        self.bar = bar
        self.name = stream.name

    def fileno(self) -> int:
        return self.stream.fileno()

    def tell(self) -> int:
        return self.stream.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        position = self.stream.seek(offset, whence)
        self.bar.n = position
        self.bar.refresh()
        return position

    def read(self, size: int = -1) -> bytes:
        chunk = self.stream.read(size)
        self.bar.update(len(chunk))
        return chunk


class Transfers(Polling):
    """The session and polling, plus uploads and downloads of whole files."""

    def _byte_bar(self, total: int | None, name: str) -> tqdm:
        """A progress bar of bytes for one file (hidden unless progress is on)."""
        return tqdm(
            total=total, desc=name, unit="B", unit_scale=True, unit_divisor=1024, disable=not self.progress, leave=False
        )

    def _send_file(self, path: str, file_path: PathLike, fields: dict, *, field: str = "file") -> httpx.Response:
        """POST a multipart form with one file, streamed from disk behind a progress bar."""
        file_path = Path(file_path)
        form = {key: str(value) for key, value in fields.items() if value is not None}
        size = file_path.stat().st_size
        with (
            open(file_path, "rb") as stream,
            self._byte_bar(size, file_path.name) as bar,
        ):
            reader = _ProgressReader(stream, bar)
            return self.request("POST", path, data=form, files={field: (file_path.name, reader)})

    def upload(self, path: PathLike, *, team: str, skip_existing: bool = True) -> Upload:
        """Stage a file in the team's artifact store (POST /api/uploads/); return the upload.

        With ``skip_existing``, the file is hashed first and, when the team has these bytes
        already, that upload is returned (``skipped=True``) and nothing is sent.
        """
        path = Path(path)
        if skip_existing:
            digest = sha256_of(path)
            found = self._json("GET", "/api/uploads/", params={"team": team, "sha256": digest, "page_size": 1})
            if found["results"]:
                upload = Upload.from_api(found["results"][0])
                logger.info("%s: already on the server (upload %s), not sent", path.name, upload.id)
                return Upload.from_api({**upload.raw, "skipped": True})
        upload = Upload.from_api(self._send_file("/api/uploads/", path, {"team": team}).json())
        logger.info("%s: uploaded (upload %s, %s bytes)", path.name, upload.id, upload.size_bytes)
        return upload

    def download(self, obj: Assembly | Backbone | Head | int, path: PathLike, *, verify: bool = True) -> Path:
        """Stream an assembly's zip (or a backbone's or head's .keras file) to ``path``; return the file.

        An int is an assembly id. A folder ``path`` gets the server's file name. The bytes go to a
        temporary file next to it, are checked against the object's sha256, and only then take
        the final name; a mismatch removes them and raises ModelHubError (code checksum_mismatch).
        """
        obj = self.refresh(Assembly(id=obj) if isinstance(obj, int) else obj)
        if not obj.download_url:
            raise ModelHubError(
                f"{obj.label} has nothing to download yet (status '{obj.status}'). Wait for it first.",
                code="not_ready",
                detail={"current_status": obj.status},
            )
        target = Path(path)
        with self._stream_get(obj.download_url) as response:
            if response.status_code >= 400:
                raise ModelHubError.from_response(response)
            self._refuse_redirect("GET", obj.download_url, response)
            if target.is_dir():
                target = target / _filename_from(response, f"{type(obj).__name__.lower()}-{obj.id}")
            expected = obj.sha256 or response.headers.get("x-checksum-sha256")
            size = int(response.headers.get("content-length") or 0) or None
            partial = target.with_name(f".{target.name}.part")
            digest = hashlib.sha256()
            try:
                with (
                    open(partial, "wb") as stream,
                    self._byte_bar(size, target.name) as bar,
                ):
                    for chunk in response.iter_bytes(CHUNK_BYTES):
                        digest.update(chunk)
                        stream.write(chunk)
                        bar.update(len(chunk))
            except httpx.TransportError as exc:
                partial.unlink(missing_ok=True)
                raise ModelHubError.from_transport(exc, f"{self.url}{obj.download_url}") from exc
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
        if verify and expected and digest.hexdigest() != expected:
            partial.unlink(missing_ok=True)
            raise ModelHubError(
                f"The download of {obj.label} is corrupt: its bytes hash to {digest.hexdigest()[:12]}, the server "
                f"says {expected[:12]}. Nothing was written to {target}; download it again.",
                code="checksum_mismatch",
                detail={"expected": expected, "actual": digest.hexdigest()},
            )
        os.replace(partial, target)
        logger.info("%s: saved %s (sha256 %s verified)", obj.label, target, digest.hexdigest()[:12])
        return target
