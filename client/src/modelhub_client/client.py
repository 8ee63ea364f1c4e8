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

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from modelhub_client.errors import ModelHubError
from modelhub_client.models import Assembly, Backbone, Dataset, Export, Head, Job, ModelImport, Team
from modelhub_client.session import PAGE_SIZE, _id_of
from modelhub_client.transfers import PathLike, Transfers, model_files, sha256_of

logger = logging.getLogger("modelhub_client")

__all__ = ["Client", "sha256_of"]


class Client(Transfers):
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

    The HTTP session (session.py), waiting (polling.py) and uploads and downloads (transfers.py)
    are its base classes; this class holds the typed calls, one per REST resource.
    """

    # --- Teams and tokens ------------------------------------------------------------------

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

    # --- Datasets ---------------------------------------------------------------------------

    def upload_dataset(
        self,
        path: PathLike,
        *,
        team: str,
        name: str,
        columns: dict | str | None = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> Dataset:
        """Upload a dataset (.csv, .jsonl, .parquet, .npz or a .zip of image folders); a worker validates it.

        ``columns`` maps a table's columns, e.g. ``{"inputs": {"text": "review"}, "label": "sentiment",
        "validation": {"fraction": 0.1}}`` (a dict or its JSON text).
        """
        text = json.dumps(columns) if isinstance(columns, dict) else columns
        fields = {"team": team, "name": name, "columns": text}
        dataset = Dataset.from_api(self._send_file("/api/datasets/", path, fields).json())
        return self.wait(dataset, timeout=timeout) if wait else dataset

    def dataset(self, dataset: Dataset | int) -> Dataset:
        """Return one dataset with its preview and the backbones it fits, fresh from the server."""
        return Dataset.from_api(self._json("GET", f"/api/datasets/{_id_of(dataset)}/"))

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

    # --- Exports of an assembly (ONNX, LiteRT) -------------------------------------------------

    def export_create(
        self,
        assembly: Assembly | int,
        *,
        format: str = "onnx",
        quantization: str = "none",
        dataset: int | None = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> Export:
        """Export a ready assembly to "onnx" or "litert" ("none", "float16" or "dynamic_int8" quantization).

        A worker converts it and verifies every task against the SavedModel (``report``); with
        ``dataset`` (an id of a ready dataset fitting the backbone) the report adds each task's argmax
        agreement on its rows. The same assembly, format and quantization return the existing export
        (``existing=True``); a failed one is queued again.
        """
        body = {"format": format, "quantization": quantization}
        if dataset is not None:
            body["dataset"] = dataset
        export = Export.from_api(self._json("POST", f"/api/assemblies/{_id_of(assembly)}/exports/", json=body))
        return self.wait(export, timeout=timeout) if wait else export

    def export_get(self, assembly: Assembly | int, export: Export | int) -> Export:
        """Return one export of an assembly, fresh from the server."""
        return Export.from_api(self._json("GET", f"/api/assemblies/{_id_of(assembly)}/exports/{_id_of(export)}/"))

    def export_list(self, assembly: Assembly | int) -> list[Export]:
        """Return the exports of an assembly, newest first."""
        return self._list(f"/api/assemblies/{_id_of(assembly)}/exports/", Export)

    def export_download(self, export: Export, path: PathLike) -> Path:
        """Stream a ready export's file (.onnx or .tflite) to ``path`` (a file or a folder), sha256 checked."""
        return self.download(export, path)

    def aliases(self, *, team: str | None = None) -> list[dict]:
        """Return the release aliases of your teams (GET /api/aliases/), as the server sends them.

        Servers without the release workflow answer 404, raised as ModelHubError.
        """
        return self._pages("/api/aliases/", {"team": team or None})

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
