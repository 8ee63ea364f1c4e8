"""``Client``: typed calls to ModelHub's REST API, with uploads, waiting, downloads and job logs.

Every method returns a plain dataclass (modelhub_client.models) or a list of them, and raises
ModelHubError with the server's error envelope when a call fails. Example::

    from modelhub_client import Client

    with Client("https://modelhub.example", token) as hub:
        imported = hub.wait(hub.import_models("models/", team="vision", backbone_name="mobilenet"))
        for head_id in imported.head_ids:
            hub.submit(head_id)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import unquote

import httpx
from tqdm import tqdm

from modelhub_client import __version__
from modelhub_client.config import resolve_settings
from modelhub_client.errors import ModelHubError
from modelhub_client.models import (
    ApiObject,
    Assembly,
    Backbone,
    Head,
    Job,
    ModelImport,
    Team,
    TrackedObject,
    Upload,
)

logger = logging.getLogger("modelhub_client")

T = TypeVar("T", bound=ApiObject)
Tracked = TypeVar("Tracked", bound=TrackedObject)
PathLike = str | os.PathLike

CHUNK_BYTES = 1024 * 1024
PAGE_SIZE = 500  # the server's largest page
MODEL_SUFFIX = ".keras"
# Statuses worth retrying while polling: a proxy or the database was briefly away.
TRANSIENT_STATUSES = frozenset({502, 503, 504})
# 429 (a rate limit: settings MODELHUB_THROTTLE_*): every request waits the server's Retry-After and
# tries again, at most this many times, never waiting longer than MAX_RETRY_AFTER seconds at once.
MAX_RATE_LIMIT_RETRIES = 5
MAX_RETRY_AFTER = 300.0


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


def _id_of(obj: ApiObject | int) -> int:
    return obj if isinstance(obj, int) else obj.id  # type: ignore[attr-defined]


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


class Client:
    """A ModelHub server, reached with an API token.

    Args:
        url: the server's base URL, e.g. "https://modelhub.example". Default: MODELHUB_URL, then
            the URL saved by `modelhub login`.
        token: an API token (`Authorization: Token <key>`). Default: MODELHUB_TOKEN, then the token
            saved by `modelhub login` for that URL.
        timeout: seconds to wait for each network read or write (not for a whole upload).
        progress: show progress bars on stderr: True, False, or None for "when stderr is a terminal".
        transport: an httpx transport (tests pass httpx.MockTransport).
        max_rate_limit_retries: how many times one request is sent again after a 429 (rate limited),
            each after the server's Retry-After (else 1, 2, 4, ... s, up to 300 s); then the 429 is raised.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 60.0,
        progress: bool | None = None,
        transport: httpx.BaseTransport | None = None,
        max_rate_limit_retries: int = MAX_RATE_LIMIT_RETRIES,
    ) -> None:
        settings = resolve_settings(url, token)
        if not settings.url:
            raise ModelHubError(
                "No ModelHub URL: pass Client(url, token), set MODELHUB_URL, or run `modelhub login URL`.",
                code="not_configured",
            )
        self.url = settings.url
        self.token = settings.token
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.max_rate_limit_retries = max_rate_limit_retries
        headers = {"User-Agent": f"modelhub-client/{__version__}", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0)),
            transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # --- HTTP -----------------------------------------------------------------------------

    def request(self, method: str, path: str, *, authenticated: bool = True, **kwargs: Any) -> httpx.Response:
        """Send one request; return the response, or raise ModelHubError for a 4xx/5xx or no answer.

        A 429 (rate limited) is sent again after the server's Retry-After, up to
        ``max_rate_limit_retries`` times; files being uploaded are rewound for each try.
        """
        if authenticated and not self.token:
            raise ModelHubError(
                f"No API token for {self.url}: set MODELHUB_TOKEN or run `modelhub login {self.url}`.",
                code="not_authenticated",
            )
        rewind = _rewinder(kwargs.get("files"))
        for attempt in range(self.max_rate_limit_retries + 1):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise ModelHubError.from_transport(exc, f"{self.url}{path}") from exc
            if response.status_code != 429 or attempt == self.max_rate_limit_retries:
                break
            delay = _retry_after(response, attempt)
            logger.info("%s %s: rate limited (HTTP 429); trying again in %.0f s", method, path, delay)
            response.close()
            time.sleep(delay)
            rewind()
        if response.status_code >= 400:
            raise ModelHubError.from_response(response)
        self._refuse_redirect(method, path, response)
        return response

    def _refuse_redirect(self, method: str, path: str, response: httpx.Response) -> None:
        """Raise on a redirect: following it could send the token elsewhere, or save a redirect page."""
        if response.is_redirect:
            raise ModelHubError(
                f"{method} {self.url}{path} was redirected to {response.headers.get('location')}. Use the "
                "address it ends at as the server URL (often https:// instead of http://).",
                status=response.status_code,
                code="redirect",
            )

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise ModelHubError(
                f"{method} {self.url}{path} answered HTTP {response.status_code} with something that is not JSON "
                f"({response.headers.get('content-type', 'no content type')}). Check that the URL points at ModelHub.",
                status=response.status_code,
                code="invalid_response",
            ) from None

    def _list(self, path: str, model: type[T], params: dict | None = None) -> list[T]:
        """Return every item of a paginated list, page after page."""
        query = {key: value for key, value in (params or {}).items() if value is not None}
        items: list[T] = []
        page = 1
        while True:
            body = self._json("GET", path, params={**query, "page": page, "page_size": PAGE_SIZE})
            items += [model.from_api(item) for item in body["results"]]
            if not body.get("next"):
                return items
            page += 1

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

    # --- Teams and uploads ------------------------------------------------------------------

    def teams(self) -> list[Team]:
        """Return the teams you belong to, with your role in each."""
        return self._list("/api/teams/", Team)

    def exchange_password(self, username: str, password: str) -> dict:
        """Exchange a username and password for a new token: return {"token", "expires_at"}."""
        body = {"username": username, "password": password}
        return self._json("POST", "/api/auth/token/", json=body, authenticated=False)

    def revoke_own_token(self) -> bool:
        """Revoke the token this client uses (DELETE /api/tokens/{id}/); return whether it was found.

        The server lists tokens by their first characters only: the token is revoked when exactly
        one active token of yours starts with them.
        """
        if not self.token:
            return False
        body = self._json("GET", "/api/tokens/", params={"page_size": PAGE_SIZE})
        matches = [
            row
            for row in body["results"]
            if row.get("status") == "active" and row.get("prefix") and self.token.startswith(row["prefix"])
        ]
        if len(matches) != 1:
            return False
        self.request("DELETE", f"/api/tokens/{matches[0]['id']}/")
        return True

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

    # --- Backbones --------------------------------------------------------------------------

    def upload_backbone(
        self,
        path: PathLike,
        *,
        team: str,
        name: str,
        feature_layer: str = "",
        description: str = "",
        wait: bool = False,
        timeout: float | None = None,
    ) -> Backbone:
        """Upload a backbone .keras file (a worker validates it); return the version, waited for if asked.

        Same bytes as an existing version of the team return that version (``deduplicated``).
        """
        fields = {"team": team, "name": name, "feature_layer": feature_layer, "description": description}
        backbone = Backbone.from_api(self._send_file("/api/backbones/", path, fields).json())
        return self.wait(backbone, timeout=timeout) if wait else backbone

    def backbones(
        self, *, team: str | None = None, name: str | None = None, status: str | None = None
    ) -> list[Backbone]:
        """Return the backbone versions of your teams, filtered."""
        return self._list("/api/backbones/", Backbone, {"team": team, "name": name, "status": status})

    def backbone(self, backbone: Backbone | int) -> Backbone:
        """Return one backbone version, fresh from the server."""
        return Backbone.from_api(self._json("GET", f"/api/backbones/{_id_of(backbone)}/"))

    # --- Heads and review -------------------------------------------------------------------

    def upload_head(
        self,
        path: PathLike,
        *,
        backbone: Backbone | int,
        task: str,
        labels: list[str] | None = None,
        description: str = "",
        wait: bool = False,
        timeout: float | None = None,
    ) -> Head:
        """Upload a head (or a full model containing the backbone) for a task; return the new version."""
        fields = {
            "backbone": _id_of(backbone),
            "task": task,
            "labels": json.dumps(list(labels)) if labels else None,
            "description": description,
        }
        head = Head.from_api(self._send_file("/api/heads/", path, fields).json())
        return self.wait(head, timeout=timeout) if wait else head

    def heads(
        self,
        *,
        team: str | None = None,
        task: str | None = None,
        status: str | None = None,
        backbone: Backbone | int | None = None,
        search: str | None = None,
    ) -> list[Head]:
        """Return the head versions of your teams, filtered (status e.g. "draft", "in_review", "approved")."""
        params = {
            "team": team,
            "task": task,
            "status": status,
            "backbone": _id_of(backbone) if backbone is not None else None,
            "q": search,
        }
        return self._list("/api/heads/", Head, params)

    def head(self, head: Head | int) -> Head:
        """Return one head version, fresh from the server."""
        return Head.from_api(self._json("GET", f"/api/heads/{_id_of(head)}/"))

    def _transition(self, head: Head | int, action: str, comment: str) -> Head:
        body = self._json("POST", f"/api/heads/{_id_of(head)}/{action}/", json={"comment": comment})
        return Head.from_api(body)

    def submit(self, head: Head | int, comment: str = "") -> Head:
        """Ask for review: draft or changes_requested -> in_review."""
        return self._transition(head, "submit", comment)

    def approve(self, head: Head | int, comment: str = "") -> Head:
        """Approve a head in review (a reviewer or admin who did not author it)."""
        return self._transition(head, "approve", comment)

    def request_changes(self, head: Head | int, comment: str) -> Head:
        """Send a head in review back to its author, saying what to change."""
        return self._transition(head, "request_changes", comment)

    def archive(self, head: Head | int, comment: str = "") -> Head:
        """Archive a head version (its author, a reviewer or an admin)."""
        return self._transition(head, "archive", comment)

    # --- Imports ----------------------------------------------------------------------------

    def import_models(
        self,
        folder_or_paths: PathLike | Iterable[PathLike],
        *,
        team: str,
        backbone_name: str,
        feature_layer: str | None = None,
        branches: bool = False,
        tasks: list[str] | None = None,
        wait: bool = False,
        timeout: float | None = None,
        min_shared_fraction: float | None = None,
    ) -> ModelImport:
        """Import full models that share one backbone: one backbone version plus one draft head per file.

        Each file is staged with POST /api/uploads/ (skipped when the team has its bytes already),
        then one POST /api/imports/ names them all. A worker splits the models; ``wait`` waits for it.

        Args:
            folder_or_paths: a folder (its *.keras files, sorted by name) or a list of .keras files.
            team: the team's slug.
            backbone_name: the backbone's name; identical weights reuse an existing version.
            feature_layer: the backbone's last layer. Default: the deepest layer the models share
                (a single file needs it).
            branches: let models that fine-tuned the top of the backbone keep those layers as a
                branch (each head's ``branch``); off, any backbone difference fails the import.
            min_shared_fraction: with branches, the least share of the backbone's parameters every
                model must share bit for bit (server default 0.5).
            tasks: one task slug per file. Default: from the file names.
            wait: wait for the worker before returning.
            timeout: seconds to wait at most (None: no limit).

        Returns:
            The import; once it succeeded, ``head_ids`` lists the new draft heads.
        """
        paths = model_files(folder_or_paths)
        uploads = [self.upload(path, team=team) for path in paths]
        body: dict[str, Any] = {
            "team": team,
            "backbone_name": backbone_name,
            "uploads": [upload.id for upload in uploads],
            "branches": branches,
        }
        if feature_layer:
            body["feature_layer"] = feature_layer
        if min_shared_fraction is not None:
            body["min_shared_fraction"] = min_shared_fraction
        if tasks is not None:
            body["tasks"] = list(tasks)
        model_import = ModelImport.from_api(self._json("POST", "/api/imports/", json=body))
        logger.info("import %s queued: %s files", model_import.id, len(paths))
        return self.wait(model_import, timeout=timeout) if wait else model_import

    def model_import(self, model_import: ModelImport | int) -> ModelImport:
        """Return one import, fresh from the server (its per-file report once it is done)."""
        return ModelImport.from_api(self._json("GET", f"/api/imports/{_id_of(model_import)}/"))

    # --- Assemblies -------------------------------------------------------------------------

    def assemble(
        self,
        *,
        team: str,
        backbone: Backbone | int,
        heads: Iterable[Head | int] | None = None,
        alias: str | None = None,
        name: str = "",
        wait: bool = False,
        timeout: float | None = None,
    ) -> Assembly:
        """Assemble heads on a backbone into one SavedModel; return the assembly (waited for if asked).

        Without ``heads``, every approved head on the backbone. The same backbone and heads
        return the existing assembly (``existing=True``). ``alias`` asks for the heads a release
        alias names; it needs a server with aliases, and any other server's error is raised as is.
        """
        if heads is not None and alias is not None:
            raise ModelHubError("Give heads or an alias, not both.", code="invalid")
        body: dict[str, Any] = {"team": team, "backbone": _id_of(backbone), "name": name}
        if heads is not None:
            body["heads"] = [_id_of(head) for head in heads]
        if alias is not None:
            self._require_request_field("AssemblyCreateRequest", "alias", "Assembly aliases")
            body["alias"] = alias
        assembly = Assembly.from_api(self._json("POST", "/api/assemblies/", json=body))
        return self.wait(assembly, timeout=timeout) if wait else assembly

    def assembly(self, assembly: Assembly | int) -> Assembly:
        """Return one assembly, fresh from the server."""
        return Assembly.from_api(self._json("GET", f"/api/assemblies/{_id_of(assembly)}/"))

    def assemblies(self) -> list[Assembly]:
        """Return the assemblies of your teams."""
        return self._list("/api/assemblies/", Assembly)

    def aliases(self, *, team: str | None = None) -> list[dict]:
        """Return the release aliases of your teams (GET /api/aliases/), as the server sends them.

        Servers without the release workflow answer 404, raised as ModelHubError.
        """
        query = {"team": team} if team else {}
        items: list[dict] = []
        page = 1
        while True:
            body = self._json("GET", "/api/aliases/", params={**query, "page": page, "page_size": PAGE_SIZE})
            items += body["results"]
            if not body.get("next"):
                return items
            page += 1

    def _require_request_field(self, component: str, field: str, feature: str) -> None:
        """Raise when the server's schema shows that a request body ignores ``field``.

        The API ignores unknown fields, so sending one that an older server does not know would
        quietly do something else (an assembly of every approved head instead of an alias's).
        """
        try:
            schema = self._json("GET", "/api/schema/", params={"format": "json"})
            properties = schema["components"]["schemas"][component]["properties"]
        except (ModelHubError, KeyError, TypeError, ValueError):
            return  # no schema to tell: send it and let the server answer
        if field not in properties:
            raise ModelHubError(
                f"{feature} are not available on {self.url}: its {component} has no '{field}' field, so the "
                f"server would ignore it. Upgrade the server, or name the heads instead.",
                code="not_supported",
                detail={"component": component, "field": field},
            )

    # --- Waiting and downloads --------------------------------------------------------------

    def refresh(self, obj: Tracked) -> Tracked:
        """Return the object again, fresh from the server."""
        return type(obj).from_api(self._json("GET", obj.path))

    def wait(
        self,
        obj: Tracked,
        *,
        timeout: float | None = None,
        interval: float = 0.5,
        max_interval: float = 5.0,
    ) -> Tracked:
        """Poll the object until the worker is done with it; return it in its terminal status.

        The interval grows by half each poll up to ``max_interval``. A brief 502/503/504 or a
        dropped connection is polled through. Raises ModelHubError (code "timeout") after
        ``timeout`` seconds; a failed object is returned, not raised (check ``.failed``).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        current = obj
        while not current.done:
            if deadline is not None and time.monotonic() + interval > deadline:
                raise ModelHubError(
                    f"Gave up waiting for {current.label} after {timeout:g} s: it is still '{current.status}'. "
                    "Wait longer (--timeout), or look at the worker.",
                    code="timeout",
                    detail={"id": current.id, "status": current.status},
                )
            time.sleep(interval)
            interval = min(interval * 1.5, max_interval)
            try:
                current = self.refresh(current)
            except ModelHubError as exc:
                if exc.status not in TRANSIENT_STATUSES and exc.code not in ("connection_error", "timeout"):
                    raise
                logger.info("polling %s: %s (trying again)", current.label, exc)
        return current

    def download(self, obj: Assembly | Backbone | Head | int, path: PathLike, *, verify: bool = True) -> Path:
        """Stream an assembly's zip (or a backbone's or head's .keras file) to ``path``; return the file.

        An int is an assembly id. A folder ``path`` gets the server's file name. The bytes go to a
        temporary file next to it, are checked against the object's sha256, and only then take
        the final name; a mismatch removes them and raises ModelHubError (code checksum_mismatch).
        """
        obj = self.assembly(obj) if isinstance(obj, int) else self.refresh(obj)
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

    @contextlib.contextmanager
    def _stream_get(self, path: str) -> Iterator[httpx.Response]:
        """Open a streamed GET of ``path``, waiting out 429s as request() does."""
        for attempt in range(self.max_rate_limit_retries + 1):
            try:
                with self._http.stream("GET", path, headers={"Accept": "*/*"}) as response:
                    if response.status_code != 429 or attempt == self.max_rate_limit_retries:
                        yield response
                        return
                    delay = _retry_after(response, attempt)
            except httpx.TransportError as exc:
                raise ModelHubError.from_transport(exc, f"{self.url}{path}") from exc
            logger.info("GET %s: rate limited (HTTP 429); trying again in %.0f s", path, delay)
            time.sleep(delay)

    # --- Training jobs ----------------------------------------------------------------------

    def train_head(
        self,
        *,
        team: str,
        backbone: Backbone | int,
        dataset: int,
        task: str,
        head: dict | str | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        learning_rate: float | None = None,
        seed: int | None = None,
        early_stopping_patience: int | None = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> Job:
        """Train a new head on the frozen backbone's features; return the job (waited for if asked).

        ``head`` is a head spec, e.g. {"type": "mlp", "hidden": [64], "dropout": 0.1}, or just its
        type ("dense", "mlp"). Parameters left as None take the server's defaults; the server
        names any bad one in a 400.
        """
        params: dict[str, Any] = {
            "backbone": _id_of(backbone),
            "dataset": dataset,
            "task": task,
            "head": {"type": head} if isinstance(head, str) else head,
            "epochs": epochs,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "seed": seed,
            "early_stopping": {"patience": early_stopping_patience} if early_stopping_patience is not None else None,
        }
        return self.start_job("train_head", team=team, wait=wait, timeout=timeout, **params)

    def start_job(self, kind: str, *, team: str, wait: bool = False, timeout: float | None = None, **params) -> Job:
        """Start a job of any kind (train_head, train_heads, fine_tune, grow_backbone) with its parameters."""
        body = {"team": team, "kind": kind, **{key: value for key, value in params.items() if value is not None}}
        job = Job.from_api(self._json("POST", "/api/jobs/", json=body))
        return self.wait(job, timeout=timeout) if wait else job

    def jobs(self, *, team: str | None = None, kind: str | None = None, status: str | None = None) -> list[Job]:
        """Return the jobs of your teams, newest first, filtered."""
        return self._list("/api/jobs/", Job, {"team": team, "kind": kind, "status": status})

    def job(self, job: Job | int) -> Job:
        """Return one job, fresh from the server."""
        return Job.from_api(self._json("GET", f"/api/jobs/{_id_of(job)}/"))

    def cancel_job(self, job: Job | int) -> Job:
        """Ask a queued or running job to stop (a running one stops at its next batch)."""
        return Job.from_api(self._json("POST", f"/api/jobs/{_id_of(job)}/cancel/"))

    def follow(
        self,
        job: Job | int,
        *,
        interval: float = 1.0,
        timeout: float | None = None,
    ) -> Iterator[str]:
        """Yield a job's log lines as they appear, and a progress line when only the progress moved.

        Ends when the job is done; then ``client.job(id)`` has its outcome. Raises ModelHubError
        (code "timeout") after ``timeout`` seconds.
        """
        job_id = _id_of(job)
        deadline = None if timeout is None else time.monotonic() + timeout
        shown_log = ""
        shown_progress: dict | None = None
        while True:
            try:
                current = self.job(job_id)
            except ModelHubError as exc:
                if exc.status not in TRANSIENT_STATUSES and exc.code not in ("connection_error", "timeout"):
                    raise
                current = None
            if current is not None:
                new_lines = _new_log_lines(shown_log, current.log or "")
                shown_log = current.log or ""
                yield from new_lines
                progress = current.progress or None
                if progress and progress != shown_progress and not new_lines and not current.done:
                    yield _progress_line(progress)
                shown_progress = progress
                if current.done:
                    return
            if deadline is not None and time.monotonic() + interval > deadline:
                raise ModelHubError(
                    f"Stopped following job {job_id} after {timeout:g} s; it is still running.",
                    code="timeout",
                    detail={"id": job_id},
                )
            time.sleep(interval)


def _retry_after(response: httpx.Response, attempt: int) -> float:
    """Return the seconds to wait after a 429: its Retry-After (seconds or an HTTP date), else 1, 2, 4, ..."""
    value = response.headers.get("retry-after", "").strip()
    seconds: float | None = None
    if value:
        try:
            seconds = float(value)
        except ValueError:
            from email.utils import parsedate_to_datetime

            try:
                seconds = parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError, IndexError, OverflowError):
                seconds = None
    if seconds is None or seconds != seconds:  # missing, unreadable or NaN
        seconds = float(2**attempt)
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _rewinder(files: Any):
    """Return a function that puts every file object of an httpx ``files=`` argument back where it started."""
    streams = []
    values = files.values() if isinstance(files, dict) else [item[1] for item in files or []]
    for value in values:
        stream = value[1] if isinstance(value, tuple) else value  # (filename, stream[, content type]) or stream
        if hasattr(stream, "seek") and hasattr(stream, "tell"):
            streams.append((stream, stream.tell()))

    def rewind() -> None:
        for stream, position in streams:
            stream.seek(position)

    return rewind


def _new_log_lines(shown: str, log: str) -> list[str]:
    """Return the complete lines of ``log`` after what was shown (the server keeps only a tail)."""
    if log.startswith(shown):
        fresh = log[len(shown) :]
    else:  # the front was trimmed: continue after the last line shown, if it is still there
        last = shown.rstrip("\n").rpartition("\n")[2]
        position = log.rfind(last + "\n") if last else -1
        fresh = log[position + len(last) + 1 :] if position >= 0 else log
    return [line for line in fresh.splitlines() if line.strip()]


def _progress_line(progress: dict) -> str:
    """Return e.g. "progress: epoch 2/5, step 10/40, about 12 s left"."""
    parts = []
    if progress.get("epochs"):
        parts.append(f"epoch {min(progress.get('epoch', 0) + 1, progress['epochs'])}/{progress['epochs']}")
    if progress.get("steps"):
        parts.append(f"step {progress.get('step', 0)}/{progress['steps']}")
    if progress.get("eta_s") is not None:
        parts.append(f"about {progress['eta_s']:.0f} s left")
    return "progress: " + (", ".join(parts) if parts else str(progress))
