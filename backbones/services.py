"""Writes of backbone versions. Model files are only opened by workers (see validation.py)."""

import os
import re

from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import Max

from artifacts.models import Blob
from artifacts.services import blob_store_uploaded_file
from backbones.models import BackboneVersion
from backbones.selectors import branch_points_pending_key
from core.errors import ConflictError, ValidationError
from core.events import event_emit
from core.tracked_work import queue_on_commit
from teams.models import Team

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
    if not NAME_PATTERN.fullmatch(name or ""):
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
                if status == BackboneVersion.Status.READY:  # imported, grown or fine-tuned
                    event_emit(team_id=team.pk, event="backbone.ready", data=backbone_event_data(version))
                return version
        except IntegrityError:
            continue
    raise ValidationError(f"Could not number a new version of '{name}': too many concurrent uploads. Retry.")


def backbone_event_data(version: BackboneVersion) -> dict:
    """Return the data of a backbone.ready event (core.events)."""
    return {
        "backbone": version.pk,
        "name": version.name,
        "version": version.version,
        "parent": version.parent_id,
        "origin": version.origin,
    }


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

    The same bytes sent again with the same name and feature layer answer with the existing
    version (an idempotent re-send). The same bytes with another feature layer are another
    backbone (another cut) and become a new version; with the same feature layer under another
    name they answer 409 naming the existing version: nothing is ever silently dropped. Files
    with different bytes but the same identity (architecture, cut and weights) are found by the
    worker, which marks the new version `deduplicated` and points it at the existing one.
    """
    check_backbone_name(name)
    check_keras_filename(file.name or "")
    stored = blob_store_uploaded_file(file=file)
    same_bytes = (
        BackboneVersion.objects.filter(team=team, blob=stored.blob)
        .exclude(status__in=[BackboneVersion.Status.REJECTED, BackboneVersion.Status.DEDUPLICATED])
        .order_by("version")
    )
    for existing in same_bytes:
        if existing.feature_layer != feature_layer:
            continue
        if existing.name == name:
            return existing, True
        raise ConflictError(
            f"This file is already {existing.label} (id {existing.pk}) with feature layer "
            f"'{existing.feature_layer or '(its output)'}'. Use that version, or pass another feature_layer to "
            "register a different cut of it.",
            detail={"existing": existing.pk, "name": existing.name, "version": existing.version},
        )
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


# A request for a backbone's branch points is sent again after this many seconds without an answer
# (a lost message, a worker that was down).
BRANCH_POINTS_RETRY_SECONDS = 300


def backbone_branch_points_request(*, backbone: BackboneVersion) -> bool:
    """Ask a worker to find where heads could branch off `backbone`, once; return whether it was asked.

    The answer lands in Django's cache (see backbones.selectors.backbone_branch_points). Asking
    again within BRANCH_POINTS_RETRY_SECONDS, or for a backbone that is not ready, does nothing.
    """
    if backbone.status != BackboneVersion.Status.READY:
        return False
    pending = branch_points_pending_key(backbone.blob.sha256)
    if not cache.add(pending, backbone.pk, timeout=BRANCH_POINTS_RETRY_SECONDS):
        return False
    queue_on_commit("backbones.describe_branch_points", backbone.pk)
    return True
