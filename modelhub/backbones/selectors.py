"""Reads of backbone versions, always scoped to the user's teams."""

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from modelhub.backbones.models import BackboneVersion
from modelhub.teams.selectors import scoped_to_member, team_object_get


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
