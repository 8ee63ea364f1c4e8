"""Worker side: validate an uploaded backbone (safe load, inspect, fingerprint, dedupe)."""

import logging

from django.db import transaction
from django.utils import timezone

from modelhub.backbones.loading import fetch_blob_to, load_backbone_file
from modelhub.backbones.models import BackboneVersion
from modelhub.core.tracked_work import row_finish

logger = logging.getLogger(__name__)


def backbone_validate(*, backbone_id: int) -> None:
    """Inspect the version's file; set status ready (with spec), deduplicated or rejected.

    Idempotent: a version no longer `validating` is left alone, so a redelivered message is
    harmless, and validation only reads the file.
    """
    import tempfile
    from pathlib import Path

    from modelhub.ml.errors import MLError
    from modelhub.ml.inspect import inspect_model, weights_fingerprint

    version = BackboneVersion.objects.filter(pk=backbone_id).select_related("blob").first()
    if version is None or version.status != BackboneVersion.Status.VALIDATING:
        return
    BackboneVersion.objects.filter(pk=version.pk).update(started_at=timezone.now())
    try:
        with tempfile.TemporaryDirectory(prefix="modelhub-backbone-") as tmp:
            path = fetch_blob_to(version.blob, Path(tmp), "backbone.keras")
            backbone = load_backbone_file(path, version.feature_layer or None)
        spec = inspect_model(backbone)
        if version.feature_layer:
            spec["feature_layer"] = version.feature_layer
        fingerprint = weights_fingerprint(backbone)
    except MLError as exc:
        row_finish(version, status=BackboneVersion.Status.REJECTED, error=str(exc))
        return
    except Exception as exc:  # report, never leave the row validating
        logger.exception("backbone %s validation crashed", backbone_id)
        row_finish(
            version, status=BackboneVersion.Status.REJECTED, error=f"Validation failed: {type(exc).__name__}: {exc}"
        )
        return
    spec["weights_sha256"] = fingerprint
    with transaction.atomic():
        duplicate = (
            BackboneVersion.objects.select_for_update()
            .filter(team=version.team, weights_sha256=fingerprint, status=BackboneVersion.Status.READY)
            .exclude(pk=version.pk)
            .order_by("version")
            .first()
        )
        if duplicate is not None:
            row_finish(
                version,
                status=BackboneVersion.Status.DEDUPLICATED,
                spec=spec,
                weights_sha256=fingerprint,
                duplicate_of=duplicate,
                error=f"Identical weights to {duplicate.label} (id {duplicate.pk}); use that version.",
            )
        else:
            row_finish(version, status=BackboneVersion.Status.READY, spec=spec, weights_sha256=fingerprint)
