"""Reads for staged uploads."""

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from artifacts.models import Upload
from teams.models import Team
from teams.selectors import scoped_to_member


def upload_list(*, user: AbstractBaseUser, filters: dict | None = None) -> QuerySet[Upload]:
    """Return the uploads of the user's teams, newest first, filtered by team slug and sha256.

    A client hashes a file first and asks for ``?team=T&sha256=H``: a match means the team has
    these bytes already, so the upload id can be reused instead of sending the file again.
    """
    filters = filters or {}
    uploads = scoped_to_member(Upload.objects.select_related("team", "blob", "created_by"), user=user)
    if filters.get("team"):
        uploads = uploads.filter(team__slug=filters["team"])
    if filters.get("sha256"):
        uploads = uploads.filter(blob__sha256=filters["sha256"].lower())
    return uploads


def upload_list_for_team(*, team: Team, ids: list[int]) -> QuerySet[Upload]:
    """Return the team's uploads among `ids` (ids of other teams' uploads are simply absent)."""
    return Upload.objects.select_related("blob").filter(team=team, pk__in=ids)
