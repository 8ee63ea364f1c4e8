"""Reads behind the inference protocols: which assembly a protocol's model name and version mean.

A model is ``{team}.{backbone name}`` (every version of that backbone), a version is an assembly
id, and a label is an alias an assembly was built from (``resolved_from.alias``). With no
version, the model means the ready assembly the alias ``champion`` resolved to most recently
(``resolved_at``: an alias moved back reuses an older row), else the newest ready one.
Non-members get "not found", as everywhere in the API.
"""

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import F, QuerySet

from assemblies.models import Assembly
from assemblies.selectors import assembly_list
from core.errors import ApplicationError, NotFoundError
from core.ids import parse_id

DEFAULT_LABEL = "champion"


class ModelNotReadyError(ApplicationError):
    """The version exists but cannot serve yet (building, verifying) or at all (failed)."""

    status_code = 400
    code = "model_not_ready"


@dataclass(frozen=True)
class ModelName:
    """A protocol model name split into its team slug and backbone name."""

    name: str
    team: str
    backbone: str


def model_name_parse(name: str) -> ModelName:
    """Split ``{team}.{backbone name}`` (the first dot separates them), or raise NotFoundError."""
    team, dot, backbone = name.partition(".")
    if not dot or not team or not backbone:
        raise NotFoundError(
            f"Model '{name}' is not a ModelHub model name: expected '{{team}}.{{backbone name}}', "
            "e.g. 'vision.resnet-small' (GET /api/backbones/ lists the names)."
        )
    return ModelName(name=name, team=team, backbone=backbone)


def model_assemblies(*, user: AbstractBaseUser, name: str) -> tuple[ModelName, QuerySet[Assembly]]:
    """Return the parsed name and every assembly of the model the user can see, newest first.

    Raises NotFoundError when the user sees no assembly of it (no such team or backbone, not a
    member, or never assembled).
    """
    model = model_name_parse(name)
    assemblies = assembly_list(user=user).filter(team__slug=model.team, backbone__name=model.backbone)
    assemblies = assemblies.order_by("-created_at", "-pk")
    if not assemblies.exists():
        raise NotFoundError(
            f"Model '{name}' was not found: no assembly of backbone '{model.backbone}' in a team '{model.team}' "
            "of yours. Assemble it first (POST /api/assemblies/), and check the name with GET /api/backbones/."
        )
    return model, assemblies


def model_version_get(*, user: AbstractBaseUser, name: str, version: str | None, label: str | None = None) -> Assembly:
    """Return the ready assembly that the model name, version (an assembly id) or label means.

    Raises NotFoundError for an unknown model, version or label, and ModelNotReadyError for a
    version that is not ready (its status and error are named).
    """
    model, assemblies = model_assemblies(user=user, name=name)
    if version is not None:
        if parse_id(version) is None:
            shown = f"{str(version)[:40]}{'...' if len(str(version)) > 40 else ''}"
            raise NotFoundError(
                f"Version '{shown}' of model '{name}' was not found: versions are assembly ids (ASCII digits, "
                f"at most 18). Ready versions: {_ready_ids(assemblies)}."
            )
        assembly = assemblies.filter(pk=parse_id(version)).first()
        if assembly is None:
            raise NotFoundError(
                f"Version {version} of model '{name}' was not found: it is not an assembly of backbone "
                f"'{model.backbone}' in team '{model.team}'. Ready versions: {_ready_ids(assemblies)}."
            )
        return _require_ready(assembly, name=name)
    ready = assemblies.filter(status=Assembly.Status.READY)
    if label is not None:
        assembly = _newest_resolution(ready.filter(resolved_from__alias=label))
        if assembly is None:
            raise NotFoundError(
                f"Label '{label}' of model '{name}' was not found: no ready assembly was built from the alias "
                f'\'{label}\'. Build one with POST /api/assemblies/ {{"alias": "{label}", ...}}.'
            )
        return assembly
    assembly = _newest_resolution(ready.filter(resolved_from__alias=DEFAULT_LABEL)) or ready.first()
    if assembly is None:
        newest = assemblies.first()
        raise ModelNotReadyError(
            f"Model '{name}' has no ready version yet: its newest assembly, {newest.pk}, is '{newest.status}'. "
            "Try again once it is built (GET /api/assemblies/{id}/)."
        )
    return assembly


def _newest_resolution(assemblies: QuerySet[Assembly]) -> Assembly | None:
    """The assembly an alias resolved to most recently (resolved_at), not the newest row: an alias moved
    back to earlier heads reuses the older row."""
    return assemblies.order_by(F("resolved_at").desc(nulls_last=True), "-created_at", "-pk").first()


def _require_ready(assembly: Assembly, *, name: str) -> Assembly:
    if assembly.status == Assembly.Status.READY:
        return assembly
    why = f": {assembly.error}" if assembly.error else ""
    later = "" if assembly.status == Assembly.Status.FAILED else " Try again once it is built."
    raise ModelNotReadyError(f"Version {assembly.pk} of model '{name}' is '{assembly.status}', not ready{why}.{later}")


def _ready_ids(assemblies: QuerySet[Assembly]) -> str:
    ids = [str(pk) for pk in assemblies.filter(status=Assembly.Status.READY).values_list("pk", flat=True)[:20]]
    return ", ".join(ids) or "none yet"


def model_ready_versions(*, assemblies: QuerySet[Assembly]) -> list[str]:
    """Return the ids of the model's ready assemblies, newest first, as protocol version strings."""
    return [str(pk) for pk in assemblies.filter(status=Assembly.Status.READY).values_list("pk", flat=True)]
