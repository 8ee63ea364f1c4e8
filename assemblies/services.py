"""Writes of assemblies: validate the choice of heads, dedupe, queue the build."""

import hashlib
from collections.abc import Iterable

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction

from assemblies.models import Assembly, AssemblyHead
from backbones.models import BackboneVersion
from backbones.selectors import backbone_get
from core.errors import ValidationError
from core.tracked_work import queue_on_commit
from heads.models import HeadVersion
from releases.selectors import alias_heads_resolve
from teams.models import Team


def heads_key(head_ids: list[int]) -> str:
    """Identify a set of heads independently of its order."""
    return hashlib.sha256(",".join(str(i) for i in sorted(head_ids)).encode()).hexdigest()


def heads_in_task_order(heads: Iterable[HeadVersion]) -> list[HeadVersion]:
    """Return heads in the order of the assembly's task_id (index = task_id): by task slug, then version."""
    return sorted(heads, key=lambda h: (h.task.slug, h.version))


def latest_approved_heads(*, backbone: BackboneVersion) -> list[HeadVersion]:
    """Return the latest approved head version of each task on `backbone` (the default choice)."""
    approved = HeadVersion.objects.filter(backbone=backbone, status=HeadVersion.Status.APPROVED).select_related("task")
    latest: dict[int, HeadVersion] = {}
    for head in approved.order_by("task__slug", "-version"):
        latest.setdefault(head.task_id, head)
    return list(latest.values())


def _choose_heads(*, backbone: BackboneVersion, head_ids: list[int] | None) -> list[HeadVersion]:
    if head_ids is None:
        heads = latest_approved_heads(backbone=backbone)
        if not heads:
            raise ValidationError(
                f"{backbone.label} has no approved heads. Approve heads on it first, or pass 'heads'."
            )
        return heads
    if not head_ids:
        raise ValidationError("'heads' is empty: give at least one approved head version id, or omit it.")
    found = {
        h.pk: h for h in HeadVersion.objects.filter(pk__in=head_ids, task__team=backbone.team).select_related("task")
    }
    problems = {}
    for head_id in head_ids:
        head = found.get(head_id)
        if head is None:
            problems[head_id] = "not found in this team"
        elif head.backbone_id != backbone.pk:
            problems[head_id] = f"is bound to backbone version {head.backbone_id}, not {backbone.pk}"
        elif head.status != HeadVersion.Status.APPROVED:
            problems[head_id] = f"is '{head.status}', only approved heads can be assembled"
    if problems:
        listed = "; ".join(f"{k} {v}" for k, v in problems.items())
        raise ValidationError(f"These heads cannot be assembled: {listed}.", detail={"heads": problems})
    heads = [found[i] for i in dict.fromkeys(head_ids)]
    slugs = [h.task.slug for h in heads]
    duplicated = sorted({s for s in slugs if slugs.count(s) > 1})
    if duplicated:
        raise ValidationError(f"Pick one version per task; several versions given for {duplicated}.")
    return heads


def assembly_create(
    *,
    team: Team,
    user: AbstractBaseUser,
    backbone_id: int,
    head_ids: list[int] | None,
    name: str = "",
    task_signatures: bool = False,
    alias: str | None = None,
) -> tuple[Assembly, bool]:
    """Create (or find) the assembly of these heads on this backbone; return (assembly, existed).

    The same heads with and without per-task signatures are two assemblies (two SavedModels).
    With `alias` (instead of `head_ids`), each task's head that alias points to on the backbone
    is taken, and the assembly records the alias and the versions it resolved to.
    """
    backbone = backbone_get(user=user, pk=backbone_id)
    if backbone.team_id != team.pk:
        raise ValidationError(
            f"Backbone version {backbone_id} belongs to team '{backbone.team.slug}', not '{team.slug}'."
        )
    if backbone.status != BackboneVersion.Status.READY:
        raise ValidationError(f"{backbone.label} is '{backbone.status}', expected 'ready'.")
    if alias is not None and head_ids is not None:
        message = "Give either 'heads' or 'alias', not both."
        raise ValidationError(message, detail={"alias": [message]})
    if alias is not None:
        heads = heads_in_task_order(alias_heads_resolve(backbone=backbone, name=alias))
        resolved_from = {"alias": alias, "heads": {head.task.slug: head.pk for head in heads}}
    else:
        heads = heads_in_task_order(_choose_heads(backbone=backbone, head_ids=head_ids))
        resolved_from = {}
    key = heads_key([h.pk for h in heads])
    with transaction.atomic():
        # Locked, so that concurrent requests re-queue a failed build once: a second message for a
        # row already building would otherwise be taken for a lost worker.
        existing = (
            Assembly.objects.select_for_update()
            .filter(backbone=backbone, heads_key=key, task_signatures=task_signatures)
            .first()
        )
        if existing is not None:
            fields = []
            if resolved_from and existing.resolved_from != resolved_from:
                # The same heads asked for by an alias: record the latest alias that resolved to them.
                existing.resolved_from = resolved_from
                fields.append("resolved_from")
            if existing.status == Assembly.Status.FAILED:
                existing.status, existing.error = Assembly.Status.QUEUED, ""
                fields += ["status", "error"]
                queue_on_commit("assemblies.build", existing.pk)
            if fields:
                existing.save(update_fields=fields)
            return existing, True
    try:
        with transaction.atomic():
            assembly = Assembly.objects.create(
                team=team,
                backbone=backbone,
                heads_key=key,
                name=name,
                created_by=user,
                task_signatures=task_signatures,
                resolved_from=resolved_from,
            )
            AssemblyHead.objects.bulk_create(
                [AssemblyHead(assembly=assembly, task_id=index, head=head) for index, head in enumerate(heads)]
            )
            queue_on_commit("assemblies.build", assembly.pk)
    except IntegrityError:
        return Assembly.objects.get(backbone=backbone, heads_key=key, task_signatures=task_signatures), True
    return assembly, False
