"""Reads for staged uploads."""

from django.db.models import QuerySet

from modelhub.artifacts.models import Upload
from modelhub.teams.models import Team


def upload_list_for_team(*, team: Team, ids: list[int]) -> QuerySet[Upload]:
    """Return the team's uploads among `ids` (ids of other teams' uploads are simply absent)."""
    return Upload.objects.select_related("blob").filter(team=team, pk__in=ids)
