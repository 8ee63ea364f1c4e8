"""Reads of the bundle: the ready assemblies it serves and the alias names that label them."""

from django.db.models import QuerySet

from assemblies.models import Assembly, AssemblyExport
from bundles.config import ServedModel, served_models
from releases.models import Alias


def bundle_assemblies(*, team_ids: list[int] | None = None) -> QuerySet[Assembly]:
    """Return the ready assemblies (of `team_ids`, or all), oldest first."""
    assemblies = Assembly.objects.filter(status=Assembly.Status.READY, blob__isnull=False)
    if team_ids is not None:
        assemblies = assemblies.filter(team_id__in=team_ids)
    return assemblies.select_related("team", "backbone", "blob").order_by("pk")


def bundle_models(*, team_ids: list[int] | None = None) -> list[ServedModel]:
    """Return the served models of the bundle, with the labels of aliases that exist now."""
    assemblies = list(bundle_assemblies(team_ids=team_ids))
    names: dict[int, set[str]] = {}
    aliases = Alias.objects.filter(head__isnull=False, task__team_id__in={a.team_id for a in assemblies})
    for team_id, name in aliases.values_list("task__team_id", "name"):
        names.setdefault(team_id, set()).add(name)
    return served_models(assemblies, alias_names_by_team=names)


def verified_onnx_export(*, assembly: Assembly) -> AssemblyExport | None:
    """Return the assembly's ready (verified) float32 ONNX export, if any: what the Triton repository holds."""
    return (
        AssemblyExport.objects.filter(
            assembly=assembly,
            format=AssemblyExport.Format.ONNX,
            quantization=AssemblyExport.Quantization.NONE,
            status=AssemblyExport.Status.READY,
            blob__isnull=False,
        )
        .select_related("blob")
        .first()
    )
