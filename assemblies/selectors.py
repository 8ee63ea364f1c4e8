"""Reads of assemblies, scoped to the user's teams."""

from collections.abc import Iterable

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Case, Count, F, IntegerField, QuerySet, Value, When

from assemblies.models import Assembly, AssemblyExport, AssemblyHead, Prediction
from core.errors import NotFoundError
from teams.selectors import scoped_to_member, team_object_get


def assembly_list(*, user: AbstractBaseUser) -> QuerySet[Assembly]:
    return scoped_to_member(Assembly.objects.select_related("team", "backbone", "blob"), user=user)


def assembly_get(*, user: AbstractBaseUser, pk) -> Assembly:
    return team_object_get(
        Assembly.objects.select_related("team", "backbone", "blob"), user=user, pk=pk, label="Assembly"
    )


def assembly_entry_list(*, assembly: Assembly) -> QuerySet[AssemblyHead]:
    """Return the assembly's heads in task_id order, with their task, blob and branch blob loaded."""
    return assembly.entries.select_related("head", "head__task", "head__blob", "head__branch_blob")


# The branch table names this many tasks per branch, then says how many more use it.
MAX_BRANCH_TASKS_SHOWN = 20


def assembly_branches(*, assembly: Assembly, entries: Iterable[AssemblyHead]) -> dict | None:
    """Return where the assembly's trunk is cut and its distinct branches; None when no head has a branch.

    Read from the manifest once the build has written it (what the SavedModel serves), else from
    the head versions (what the build will cut). No query: ``entries`` come from
    assembly_entry_list. A branch is distinct by its artifact and branch point, as the build
    counts them (tasks sharing one are served by it once).

    Returns:
        ``{"built", "branch_points", "num_segments", "num_plain", "branches"}``: ``built`` says
        the figures come from the manifest; ``branch_points`` are the backbone layers the trunk is
        cut after, in graph order; ``num_plain`` counts the tasks that read the whole backbone;
        ``branches`` are ``{"after_layer", "num_layers", "params", "sha256", "num_tasks", "tasks",
        "num_more_tasks"}`` ordered by branch point, ``tasks`` the first MAX_BRANCH_TASKS_SHOWN
        ``{"task_id", "task", "head_id"}`` that use it.
    """
    entries = list(entries)
    head_ids = {entry.task_id: entry.head_id for entry in entries}
    manifest = assembly.manifest or {}
    built = bool(manifest.get("heads"))
    if built:
        rows = [(head["task_id"], head["task"], head.get("branch")) for head in manifest["heads"]]
        trunk = manifest.get("backbone", {}).get("trunk") or {}
    else:
        rows = [(entry.task_id, entry.head.task.slug, _planned_branch(entry.head)) for entry in entries]
        trunk = {}
    groups: dict[tuple[str, str], dict] = {}
    for task_id, task, branch in rows:
        if not branch:
            continue
        key = (branch.get("sha256", ""), branch.get("after_layer", ""))
        group = groups.setdefault(
            key,
            {
                "after_layer": key[1],
                "num_layers": int(branch.get("layers") or 0),
                "params": int(branch.get("params") or 0),
                "sha256": key[0],
                "tasks": [],
            },
        )
        group["tasks"].append({"task_id": task_id, "task": task, "head_id": head_ids.get(task_id)})
    if not groups:
        return None
    points = trunk.get("branch_points") or _in_graph_order(
        {group["after_layer"] for group in groups.values()}, assembly.backbone.spec or {}
    )
    position = {point: index for index, point in enumerate(points)}
    branches = sorted(
        groups.values(), key=lambda g: (position.get(g["after_layer"], len(points)), g["tasks"][0]["task_id"])
    )
    for group in branches:
        tasks = group["tasks"]
        group.update(
            num_tasks=len(tasks),
            tasks=tasks[:MAX_BRANCH_TASKS_SHOWN],
            num_more_tasks=max(0, len(tasks) - MAX_BRANCH_TASKS_SHOWN),
        )
    num_plain = len(rows) - sum(group["num_tasks"] for group in branches)
    return {
        "built": built,
        "branch_points": list(points),
        # The trunk's segments: one below each point, and the top when some task reads the whole backbone.
        "num_segments": int(trunk.get("segments") or len(points) + (1 if num_plain else 0)),
        "num_plain": num_plain,
        "branches": branches,
    }


def _planned_branch(head) -> dict | None:
    """A head version's branch as the manifest will list it (layers counted), or None for a plain head."""
    if not head.branch or head.branch_blob_id is None:
        return None
    return {
        "after_layer": head.branch.get("after_layer", ""),
        "layers": len(head.branch.get("layers") or []),
        "params": head.branch.get("params"),
        "sha256": head.branch_blob.sha256,
    }


def _in_graph_order(points: set[str], spec: dict) -> list[str]:
    """Order branch points as the backbone spec lists its layers (unknown names last, by name)."""
    index = {layer.get("name"): position for position, layer in enumerate(spec.get("layers") or [])}
    leaf_index = {str(name).rsplit("/", 1)[-1]: position for name, position in index.items()}

    def place(point: str) -> tuple[int, str]:
        found = index.get(point, leaf_index.get(point.rsplit("/", 1)[-1]))
        return (len(index) if found is None else found, point)

    return sorted(points, key=place)


def prediction_get(*, user: AbstractBaseUser, assembly_pk, pk) -> Prediction:
    """Return prediction `pk` of assembly `assembly_pk` in one of the user's teams, else NotFoundError."""
    assembly = assembly_get(user=user, pk=assembly_pk)
    prediction = Prediction.objects.filter(assembly=assembly, pk=pk).first()
    if prediction is None:
        raise NotFoundError(
            f"Prediction {pk} was not found on assembly {assembly.pk}. Use the 'poll' URL that "
            "POST /api/assemblies/{id}/predict/ answered."
        )
    prediction.assembly = assembly
    return prediction


def export_list(*, assembly: Assembly) -> QuerySet[AssemblyExport]:
    """Return the assembly's exports, newest first."""
    return AssemblyExport.objects.filter(assembly=assembly).select_related("blob")


def export_get(*, user: AbstractBaseUser, assembly_pk, pk) -> AssemblyExport:
    """Return export `pk` of assembly `assembly_pk` in one of the user's teams, else NotFoundError."""
    assembly = assembly_get(user=user, pk=assembly_pk)
    export = export_list(assembly=assembly).filter(pk=pk).first()
    if export is None:
        raise NotFoundError(
            f"Export {pk} was not found on assembly {assembly.pk}. GET /api/assemblies/{assembly.pk}/exports/ "
            "lists its exports."
        )
    export.assembly = assembly
    return export


def export_for_predictions(*, assembly: Assembly) -> AssemblyExport | None:
    """Return the assembly's ready, verified ONNX export without quantization (the trial predict's fast path)."""
    export = (
        export_list(assembly=assembly)
        .filter(format=AssemblyExport.Format.ONNX, quantization=AssemblyExport.Quantization.NONE)
        .filter(status=AssemblyExport.Status.READY, blob__isnull=False)
        .first()
    )
    if export is None or not (export.report or {}).get("passed"):
        return None
    return export


def assembly_ready_list(*, team_ids: list[int] | None = None) -> QuerySet[Assembly]:
    """Return the ready assemblies with a blob (of `team_ids`, or all teams; not user-scoped), oldest first."""
    assemblies = Assembly.objects.filter(status=Assembly.Status.READY, blob__isnull=False)
    if team_ids is not None:
        assemblies = assemblies.filter(team_id__in=team_ids)
    return assemblies.select_related("team", "backbone", "blob").order_by("pk")


def export_ready_onnx(*, assembly: Assembly) -> AssemblyExport | None:
    """Return the assembly's ready float32 ONNX export with a blob, if any (its report is not checked)."""
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


def prediction_counts(*, mixed_task_id: int) -> list[tuple[int, int, str, int]]:
    """Return (assembly id, task id, status, count) of every prediction; a mixed-task batch as `mixed_task_id`."""
    # A protocol's mixed batch is one prediction with a task per row (inputs["task_id"]).
    mixed = Case(
        When(inputs__has_key="task_id", then=Value(mixed_task_id)),
        default=F("task_id"),
        output_field=IntegerField(),
    )
    return list(
        Prediction.objects.order_by()
        .annotate(task=mixed)
        .values_list("assembly_id", "task", "status")
        .annotate(n=Count("pk"))
    )


def assembly_task_slugs(*, assembly_ids: Iterable[int]) -> dict[tuple[int, int], str]:
    """Return {(assembly id, task id): task slug} of the heads of these assemblies."""
    return {
        (assembly_id, task_id): slug
        for assembly_id, task_id, slug in AssemblyHead.objects.filter(assembly_id__in=assembly_ids).values_list(
            "assembly_id", "task_id", "head__task__slug"
        )
    }
