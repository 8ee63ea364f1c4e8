"""Reads of assemblies, scoped to the user's teams."""

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from modelhub.assemblies.models import Assembly, Prediction
from modelhub.core.errors import NotFoundError
from modelhub.teams.selectors import scoped_to_member, team_object_get


def assembly_list(*, user: AbstractBaseUser) -> QuerySet[Assembly]:
    return scoped_to_member(Assembly.objects.select_related("team", "backbone", "blob"), user=user)


def assembly_get(*, user: AbstractBaseUser, pk) -> Assembly:
    return team_object_get(
        Assembly.objects.select_related("team", "backbone", "blob"), user=user, pk=pk, label="Assembly"
    )


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
