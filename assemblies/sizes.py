"""The assembly builder's size estimate: one merged model against N separate ones, from stored blob sizes.

For a few hundred heads the builder sums the rows it lists; for thousands (the "every task"
choice) the counts and byte sums come from one SQL aggregate each, so the page makes a fixed
number of queries whatever the number of heads.
"""

import hashlib

from django.core.cache import cache
from django.db.models import BigIntegerField, Count, Max, Q, Sum
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast

from backbones.models import BackboneVersion
from heads.models import HeadVersion
from heads.selectors import head_is_latest_approved, head_latest_approved_list, heads_in_task_order


def size_comparison(
    *, backbone: BackboneVersion, num_heads: int, heads_bytes: int, num_branches: int = 0, branches_bytes: int = 0
) -> dict:
    """Estimate one merged model against N separate models from the stored blob sizes.

    The merged model stores the backbone once (the trunk), each branched head's branch (the top
    layers it owns) and every head. A separate full model is a whole backbone plus its head, also
    for a branched head (its own top layers replace the backbone's, they do not add to them), so N
    separate models take N x backbone + the heads, and the merge saves (N - 1) x backbone - branches.
    """
    backbone_bytes = backbone.blob.size_bytes
    merged = backbone_bytes + branches_bytes + heads_bytes
    separate = num_heads * backbone_bytes + heads_bytes
    return {
        "num_heads": num_heads,
        "backbone_bytes": backbone_bytes,
        "heads_bytes": heads_bytes,
        "num_branches": num_branches,
        "branches_bytes": branches_bytes,
        "merged_bytes": merged,
        "separate_bytes": separate,
        "saved_bytes": separate - merged,
        "ratio": separate / merged if merged else 0.0,
    }


def sizes_of(backbone: BackboneVersion, heads: list[HeadVersion]) -> dict:
    branched = [head for head in heads if head.branch_blob_id is not None]
    return size_comparison(
        backbone=backbone,
        num_heads=len(heads),
        heads_bytes=sum(head.blob.size_bytes for head in heads),
        num_branches=len(branched),
        branches_bytes=sum(head.branch_blob.size_bytes for head in branched),
    )


def approved_totals(approved) -> dict:
    """Count the approved heads, and the latest approved version of each task, its bytes and its
    branches' bytes, in one query."""
    is_latest = Q(head_is_latest_approved())
    totals = approved.aggregate(
        num_approved=Count("pk"),
        num_latest=Count("pk", filter=is_latest),
        latest_bytes=Sum("blob__size_bytes", filter=is_latest),
        latest_num_branches=Count("branch_blob", filter=is_latest),
        latest_branches_bytes=Sum("branch_blob__size_bytes", filter=is_latest),
    )
    return {
        **totals,
        "latest_bytes": totals["latest_bytes"] or 0,
        "latest_branches_bytes": totals["latest_branches_bytes"] or 0,
    }


# The "every task" totals and first task_id rows are cached this long under a fingerprint of the
# approved heads (a new, approved, archived or deleted head changes it; see latest_summary).
SUMMARY_CACHE_SECONDS = 3600


def latest_summary(approved, *, backbone_id: int, max_rows: int, above: int) -> tuple[dict, list[HeadVersion]]:
    """approved_totals(approved) and the first `max_rows` latest approved heads in task order.

    With at most `above` approved heads, only ``{"num_approved"}`` and no rows (the builder then
    lists every head and sums them itself).

    Both read the "no newer approved version" condition over every approved head (~20 ms each at
    10,000 heads in SQLite). They are cached under a fingerprint of the approved set, read in one
    cheap aggregate: its count, the sums of its ids, versions, tasks and blobs, its largest id and
    its last review time (an approval sets it). On a hit the page makes the fingerprint query and
    reads the cached rows by id; on a miss, the fingerprint query and the two queries it replaces.
    A cache that fails is skipped.
    """
    mark = approved.aggregate(
        num=Count("pk"),
        pk_sum=Sum("pk"),
        pk_max=Max("pk"),
        reviewed=Max("reviewed_at"),
        versions=Sum("version"),
        tasks=Sum("task_id"),
        blobs=Sum("blob_id"),
        branches=Sum("branch_blob_id"),
    )
    if mark["num"] <= above:
        return {"num_approved": mark["num"]}, []
    fingerprint = repr((backbone_id, max_rows, sorted(mark.items())))
    key = "assemblies.builder.latest:" + hashlib.sha256(fingerprint.encode()).hexdigest()
    try:
        cached = cache.get(key)
    except Exception:  # noqa: BLE001 - the cache is an optimisation; the page works without it
        cached = None
    if cached is not None:
        totals, ids = cached
        by_id = {head.pk: head for head in approved.filter(pk__in=ids)}
        if len(by_id) == len(ids):
            return totals, [by_id[pk] for pk in ids]
    totals = approved_totals(approved)
    rows = list(heads_in_task_order(head_latest_approved_list(heads=approved))[:max_rows])
    try:
        cache.set(key, (totals, [head.pk for head in rows]), SUMMARY_CACHE_SECONDS)
    except Exception:  # noqa: BLE001
        pass
    return totals, rows


def branch_groups(heads, *, max_rows: int) -> list[dict]:
    """Group branched `heads` by branch point: ``[{"after_layer", "num_heads", "params", "bytes"}]`` (one query).

    The builder's "every task" choice lists its branches this way: thousands of heads branch at a
    handful of points.
    """
    after = KeyTextTransform("after_layer", "branch")
    rows = (
        heads.filter(branch_blob__isnull=False)
        .annotate(after=after)
        .values("after")
        .annotate(num_heads=Count("pk"), params=Max(Cast(KeyTextTransform("params", "branch"), BigIntegerField())))
        .annotate(bytes=Sum("branch_blob__size_bytes"))
        .order_by("after")
    )
    return [
        {"after_layer": row["after"], "num_heads": row["num_heads"], "params": row["params"], "bytes": row["bytes"]}
        for row in rows[:max_rows]
    ]
