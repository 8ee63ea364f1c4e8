"""Plain dataclasses for the server's objects, each keeping the body it was read from in ``raw``.

Fields mirror the API (GET /api/schema/ documents them). A field the server adds later is
still in ``raw``; a field it drops reads as None. Objects that a worker finishes (backbones,
heads, imports, assemblies, jobs) say whether they are ``done`` and whether they ``failed``;
``Client.wait`` polls them until ``done``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

T = TypeVar("T", bound="ApiObject")


@dataclass(frozen=True)
class ApiObject:
    """Base of every object: ``raw`` is the JSON body exactly as the server sent it."""

    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls: type[T], data: dict) -> T:
        """Build the object from an API body, ignoring fields this client does not know."""
        names = {f.name for f in dataclasses.fields(cls)} - {"raw"}
        return cls(**{name: data[name] for name in names if name in data}, raw=dict(data))


@dataclass(frozen=True)
class TrackedObject(ApiObject):
    """An object a worker moves through statuses until a terminal one."""

    PATH: ClassVar[str] = ""
    PENDING: ClassVar[frozenset[str]] = frozenset()
    FAILED: ClassVar[frozenset[str]] = frozenset()

    id: int = 0
    status: str = ""
    error: str | None = None

    @property
    def path(self) -> str:
        """The API path of this object, e.g. "/api/assemblies/3/"."""
        return f"{self.PATH}{self.id}/"

    @property
    def done(self) -> bool:
        """Whether the worker is finished with it (its status is terminal)."""
        return self.status not in self.PENDING

    @property
    def failed(self) -> bool:
        """Whether it ended badly (rejected, failed, cancelled)."""
        return self.status in self.FAILED

    @property
    def label(self) -> str:
        """A short human name, e.g. "assembly 3"."""
        return f"{type(self).__name__.lower()} {self.id}"


@dataclass(frozen=True)
class Team(ApiObject):
    slug: str = ""
    name: str = ""
    role: str = ""


@dataclass(frozen=True)
class Upload(ApiObject):
    """A staged file (POST /api/uploads/). ``skipped``: the team had the bytes, nothing was sent."""

    id: int = 0
    team: str = ""
    filename: str = ""
    sha256: str = ""
    size_bytes: int = 0
    created_by: str | None = None
    created_at: str | None = None
    deduplicated: bool | None = None
    skipped: bool = False


@dataclass(frozen=True)
class Dataset(TrackedObject):
    PATH: ClassVar[str] = "/api/datasets/"
    PENDING: ClassVar[frozenset[str]] = frozenset({"validating"})
    FAILED: ClassVar[frozenset[str]] = frozenset({"rejected"})

    team: str = ""
    name: str = ""
    format: str = ""
    filename: str = ""
    num_examples: int | None = None
    num_validation: int | None = None
    num_classes: int | None = None
    target: str = ""
    labels: list = field(default_factory=list)
    columns: dict = field(default_factory=dict)
    inputs: list = field(default_factory=list)
    preview: dict = field(default_factory=dict)
    fits: list = field(default_factory=list)
    created_at: str | None = None


@dataclass(frozen=True)
class Backbone(TrackedObject):
    PATH: ClassVar[str] = "/api/backbones/"
    PENDING: ClassVar[frozenset[str]] = frozenset({"validating"})
    FAILED: ClassVar[frozenset[str]] = frozenset({"rejected"})

    team: str = ""
    name: str = ""
    version: int = 0
    sha256: str | None = None
    size_bytes: int | None = None
    filename: str = ""
    description: str = ""
    feature_layer: str = ""
    weights_sha256: str | None = None
    spec: dict | None = None
    parent: int | None = None
    duplicate_of: int | None = None
    origin: str | None = None
    created_by: str | None = None
    created_at: str | None = None
    finished_at: str | None = None
    download_url: str | None = None
    deduplicated: bool | None = None


@dataclass(frozen=True)
class Head(TrackedObject):
    """A head version. Review statuses: draft -> in_review -> approved | changes_requested."""

    PATH: ClassVar[str] = "/api/heads/"
    PENDING: ClassVar[frozenset[str]] = frozenset({"validating"})
    FAILED: ClassVar[frozenset[str]] = frozenset({"rejected"})

    team: str = ""
    task: str = ""
    version: int = 0
    backbone: int = 0
    backbone_name: str = ""
    backbone_version: int = 0
    sha256: str | None = None
    size_bytes: int | None = None
    filename: str = ""
    output_width: int | None = None
    branch: dict | None = None
    labels: list[str] | None = None
    metrics: dict | None = None
    description: str = ""
    spec: dict | None = None
    origin: str | None = None
    review: dict | None = None
    created_by: str | None = None
    created_at: str | None = None
    download_url: str | None = None


@dataclass(frozen=True)
class ModelImport(TrackedObject):
    """An import of full models: one backbone version plus one draft head per file."""

    PATH: ClassVar[str] = "/api/imports/"
    PENDING: ClassVar[frozenset[str]] = frozenset({"queued", "running"})
    FAILED: ClassVar[frozenset[str]] = frozenset({"failed"})

    team: str = ""
    backbone_name: str = ""
    feature_layer: str = ""
    branches: bool = False
    min_shared_fraction: float | None = None
    report: list[dict] | None = None
    summary: dict | None = None
    backbone: int | None = None
    created_at: str | None = None
    finished_at: str | None = None

    @property
    def label(self) -> str:
        return f"import {self.id}"

    @property
    def head_ids(self) -> list[int]:
        """The head versions the import registered, in file order (empty until it succeeded)."""
        return [entry["head_version"] for entry in self.report or [] if entry.get("head_version")]


@dataclass(frozen=True)
class Assembly(TrackedObject):
    """One SavedModel of a backbone and heads: queued -> building -> verifying -> ready | failed."""

    PATH: ClassVar[str] = "/api/assemblies/"
    PENDING: ClassVar[frozenset[str]] = frozenset({"queued", "building", "verifying"})
    FAILED: ClassVar[frozenset[str]] = frozenset({"failed"})

    team: str = ""
    name: str = ""
    backbone: int = 0
    tasks: list[dict] | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    saved_model_bytes: int | None = None
    verification: dict | None = None
    signatures: list | dict | None = None
    manifest: dict | None = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    download_url: str | None = None
    existing: bool | None = None


@dataclass(frozen=True)
class Export(TrackedObject):
    """An assembly exported to ONNX or LiteRT: queued -> exporting -> ready | failed.

    ``report`` is its verification against the SavedModel (per task max abs diff, argmax agreement).
    """

    PENDING: ClassVar[frozenset[str]] = frozenset({"queued", "exporting"})
    FAILED: ClassVar[frozenset[str]] = frozenset({"failed"})

    assembly: int = 0
    format: str = ""
    quantization: str = ""
    progress: dict | None = None
    attempts: int | None = None
    report: dict | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    download_url: str | None = None
    existing: bool | None = None

    @property
    def path(self) -> str:
        return f"/api/assemblies/{self.assembly}/exports/{self.id}/"

    @property
    def label(self) -> str:
        return f"export {self.id} ({self.format}, {self.quantization}) of assembly {self.assembly}"


@dataclass(frozen=True)
class Job(TrackedObject):
    """A training job: queued -> running -> succeeded | failed | cancelled."""

    PATH: ClassVar[str] = "/api/jobs/"
    PENDING: ClassVar[frozenset[str]] = frozenset({"queued", "running"})
    FAILED: ClassVar[frozenset[str]] = frozenset({"failed", "cancelled"})

    team: str = ""
    kind: str = ""
    params: dict | None = None
    progress: dict | None = None
    metrics: list[dict] | None = None
    log: str = ""
    result: Any = None
    cancel_requested: bool = False
    retry_of: int | None = None
    worker: str | None = None
    created_by: str | None = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    forgetting_report: int | None = None
