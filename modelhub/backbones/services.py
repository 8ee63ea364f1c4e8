"""Writes of backbone versions. Model files are only opened by workers (see validation.py)."""

import os
import re

from django.contrib.auth.models import AbstractBaseUser
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import Max

from modelhub.artifacts.models import Blob
from modelhub.artifacts.services import blob_store_uploaded_file
from modelhub.backbones.models import BackboneVersion
from modelhub.core.errors import ValidationError
from modelhub.core.tracked_work import queue_on_commit
from modelhub.teams.models import Team

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
SAVE_HINT = "Save the model with model.save('name.keras') (Keras 3) and upload that file."


def check_keras_filename(filename: str) -> None:
    """Raise ValidationError unless the upload is named *.keras (SavedModels are refused)."""
    if not filename.lower().endswith(".keras"):
        raise ValidationError(
            f"Expected a .keras file, received '{os.path.basename(filename)}'. SavedModel folders, "
            f".h5 and pickles are refused because loading them can run code. {SAVE_HINT}",
            code="invalid_file_type",
        )


def check_backbone_name(name: str) -> None:
    if not NAME_PATTERN.match(name or ""):
        raise ValidationError(
            f"Invalid backbone name {name!r}: use 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (e.g. 'mobilenet-v2').",
            code="invalid_name",
        )


def _next_version(team: Team, name: str) -> int:
    latest = BackboneVersion.objects.filter(team=team, name=name).aggregate(latest=Max("version"))["latest"]
    return (latest or 0) + 1


def backbone_version_create(
    *,
    team: Team,
    user: AbstractBaseUser | None,
    name: str,
    blob: Blob,
    filename: str,
    feature_layer: str = "",
    description: str = "",
    parent: BackboneVersion | None = None,
    origin: dict | None = None,
    status: str = BackboneVersion.Status.VALIDATING,
    spec: dict | None = None,
    weights_sha256: str = "",
) -> BackboneVersion:
    """Create the next version of backbone `name` in `team` (numbered safely under concurrency)."""
    check_backbone_name(name)
    for _ in range(5):
        try:
            with transaction.atomic():
                version = BackboneVersion(
                    team=team,
                    name=name,
                    version=_next_version(team, name),
                    blob=blob,
                    filename=filename,
                    feature_layer=feature_layer,
                    description=description,
                    parent=parent,
                    origin=origin or {"kind": "upload"},
                    created_by=user,
                    status=status,
                    spec=spec or {},
                    weights_sha256=weights_sha256,
                )
                version.full_clean()
                version.save()
                return version
        except IntegrityError:
            continue
    raise ValidationError(f"Could not number a new version of '{name}': too many concurrent uploads. Retry.")


def backbone_upload(
    *,
    team: Team,
    user: AbstractBaseUser,
    name: str,
    file: UploadedFile,
    feature_layer: str = "",
    description: str = "",
) -> tuple[BackboneVersion, bool]:
    """Store an uploaded backbone and queue its validation; return (version, deduplicated).

    A file whose bytes match a version the team already has answers with that version.
    Files with different bytes but identical weights are found by the worker, which marks
    the new version `deduplicated` and points it at the existing one.
    """
    check_backbone_name(name)
    check_keras_filename(file.name or "")
    stored = blob_store_uploaded_file(file=file)
    existing = (
        BackboneVersion.objects.filter(team=team, blob=stored.blob)
        .exclude(status__in=[BackboneVersion.Status.REJECTED, BackboneVersion.Status.DEDUPLICATED])
        .order_by("version")
        .first()
    )
    if existing is not None:
        return existing, True
    with transaction.atomic():
        version = backbone_version_create(
            team=team,
            user=user,
            name=name,
            blob=stored.blob,
            filename=os.path.basename(file.name),
            feature_layer=feature_layer,
            description=description,
        )
        queue_on_commit("backbones.validate", version.pk)
    return version, False
