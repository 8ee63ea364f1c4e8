"""Reads of the bundle: the ready assemblies it serves and the alias names that label them."""

from django.db.models import QuerySet

from assemblies.models import Assembly, AssemblyExport
from assemblies.selectors import assembly_ready_list, export_ready_onnx
from bundles.config import ServedModel, served_models
from releases.selectors import alias_names_by_team


def bundle_assemblies(*, team_ids: list[int] | None = None) -> QuerySet[Assembly]:
    """Return the ready assemblies (of `team_ids`, or all), oldest first."""
    return assembly_ready_list(team_ids=team_ids)


def bundle_models(*, team_ids: list[int] | None = None) -> list[ServedModel]:
    """Return the served models of the bundle, with the labels of aliases that exist now."""
    assemblies = list(bundle_assemblies(team_ids=team_ids))
    names = alias_names_by_team(team_ids={a.team_id for a in assemblies})
    return served_models(assemblies, alias_names_by_team=names)


def verified_onnx_export(*, assembly: Assembly) -> AssemblyExport | None:
    """Return the assembly's ready (verified) float32 ONNX export, if any: what the Triton repository holds."""
    return export_ready_onnx(assembly=assembly)
