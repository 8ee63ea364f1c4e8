"""Reads of backbone versions, always scoped to the user's teams."""

from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.db.models import Count, F, QuerySet, Window
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import RowNumber

from backbones.models import BackboneVersion
from teams.selectors import scoped_to_member, team_object_get


def backbone_list(*, user: AbstractBaseUser, filters: dict | None = None) -> QuerySet[BackboneVersion]:
    """Return the backbone versions of the user's teams, filtered by team/name/status."""
    filters = filters or {}
    queryset = scoped_to_member(
        BackboneVersion.objects.select_related("team", "blob", "created_by", "parent"), user=user
    )
    if filters.get("team"):
        queryset = queryset.filter(team__slug=filters["team"])
    if filters.get("name"):
        queryset = queryset.filter(name=filters["name"])
    if filters.get("status"):
        queryset = queryset.filter(status=filters["status"])
    return queryset.order_by("name", "-version")


def backbone_get(*, user: AbstractBaseUser, pk) -> BackboneVersion:
    """Return one backbone version of the user's teams, or raise NotFoundError (404)."""
    queryset = BackboneVersion.objects.select_related("team", "blob", "created_by", "parent")
    return team_object_get(queryset, user=user, pk=pk, label="Backbone version")


def backbone_lineage(*, backbone: BackboneVersion) -> list[BackboneVersion]:
    """Return the chain of ancestors, oldest first, ending with `backbone`."""
    chain = [backbone]
    while chain[0].parent_id is not None and len(chain) < 100:
        chain.insert(0, chain[0].parent)
    return chain


def backbone_children(*, backbone: BackboneVersion) -> QuerySet[BackboneVersion]:
    """Return the versions derived from `backbone` (grown or fine-tuned from it), by name and version."""
    return backbone.children.select_related("team", "created_by").order_by("name", "version")


def backbone_heads(*, backbone: BackboneVersion) -> QuerySet:
    """Return the head versions trained on `backbone`, by task slug and newest version first.

    Read through the `heads` reverse relation, so backbones never import the heads app (which
    imports backbones): scope the backbone to the user's teams first (backbone_get).
    """
    return backbone.heads.select_related("task", "task__team", "backbone", "blob", "created_by").order_by(
        "task__slug", "-version"
    )


# --- Trunk and branches (issue 10) -------------------------------------------------------------

# The dashboard labels each branch point with this many of its heads (newest first), then "+N".
BRANCH_HEADS_SHOWN = 4
# A head version that owns a branch counts on the backbone's diagram unless it is in one of these.
BRANCH_STATUSES_LEFT_OUT = ("rejected", "archived")


def branch_points_cache_key(sha256: str) -> str:
    """Return the cache key of the branch points of the backbone file with this sha256."""
    return f"backbones:branch-points:v1:{sha256}"


def branch_points_pending_key(sha256: str) -> str:
    """Return the cache key that marks the branch points of this file as asked for."""
    return branch_points_cache_key(sha256) + ":pending"


def backbone_branch_points(*, backbone: BackboneVersion) -> list[dict] | None:
    """Return where a head could branch off `backbone`, or None until a worker has looked.

    Every possible branch point of the backbone's file, shallowest first, as
    ``modelhub.ml.branches.describe_points`` gives them: ``[{"layer", "class_name",
    "params_above", "weight_layers_above"}]``. A worker reads the file once per sha256
    (backbones.describe_branch_points) and keeps the answer in Django's cache; the web
    process never opens model files.
    """
    return cache.get(branch_points_cache_key(backbone.blob.sha256))


def backbone_branches(*, backbone: BackboneVersion) -> list[dict]:
    """Return the branch points the heads on `backbone` use, in two queries whatever the number of heads.

    Returns:
        ``[{"layer", "num_heads", "params", "num_layers", "heads"}]`` by layer name: ``heads``
        holds the newest BRANCH_HEADS_SHOWN head versions branching there (task loaded),
        ``params`` and ``num_layers`` describe the branch (the same for every head at one
        point of one backbone). Rejected and archived versions are left out.

    Read through the ``heads`` reverse relation, so backbones never import the heads app.
    """
    heads = backbone.heads.filter(branch_blob__isnull=False, branch__has_key="after_layer").exclude(
        status__in=BRANCH_STATUSES_LEFT_OUT
    )
    after = KeyTextTransform("after_layer", "branch")
    counts = {
        row["after"]: row["num_heads"]
        for row in heads.annotate(after=after).values("after").annotate(num_heads=Count("pk")).order_by()
    }
    newest = (
        heads.annotate(
            after=after,
            rank=Window(RowNumber(), partition_by=[after], order_by=[F("created_at").desc(), F("pk").desc()]),
        )
        .filter(rank__lte=BRANCH_HEADS_SHOWN)
        .select_related("task")
        .order_by("after", "rank")
    )
    points: dict[str, dict] = {}
    for head in newest:
        branch = head.branch or {}
        point = points.setdefault(
            head.after,
            {
                "layer": head.after,
                "num_heads": counts.get(head.after, 0),
                "params": int(branch.get("params") or 0),
                "num_layers": len(branch.get("layers") or []),
                "heads": [],
            },
        )
        point["heads"].append(head)
    return [points[layer] for layer in sorted(points)]
