"""Reads of assemblies, scoped to the user's teams."""

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from modelhub.assemblies.models import Assembly
from modelhub.teams.selectors import scoped_to_member, team_object_get


def assembly_list(*, user: AbstractBaseUser) -> QuerySet[Assembly]:
    return scoped_to_member(Assembly.objects.select_related("team", "backbone", "blob"), user=user)


def assembly_get(*, user: AbstractBaseUser, pk) -> Assembly:
    return team_object_get(
        Assembly.objects.select_related("team", "backbone", "blob"), user=user, pk=pk, label="Assembly"
    )
