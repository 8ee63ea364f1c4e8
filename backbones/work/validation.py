"""Worker side: validate an uploaded backbone (safe load, inspect, fingerprint, dedupe), and find
where heads could branch off a backbone's file."""

import logging

from django.core.cache import cache
from django.db import transaction

from backbones.models import BackboneVersion
from backbones.selectors import branch_points_cache_key, branch_points_pending_key
from backbones.services import backbone_event_data
from backbones.work.loading import check_model_file, fetch_blob_to, load_backbone_file
from core.events import event_emit
from core.tracked_work import row_finish, run_tracked

logger = logging.getLogger(__name__)


def backbone_validate(*, backbone_id: int) -> BackboneVersion | None:
    """Inspect the version's file; set status ready (with spec), deduplicated or rejected.

    A redelivered message finds the row claimed and records "worker lost" instead of running
    twice (core.tracked_work); validation only reads the file.
    """
    version = run_tracked(BackboneVersion, backbone_id, _validate)
    if version is not None and version.status == BackboneVersion.Status.READY:
        event_emit(team_id=version.team_id, event="backbone.ready", data=backbone_event_data(version))
    return version


def _validate(version: BackboneVersion) -> None:
    import tempfile
    from pathlib import Path

    from modelhub.ml.errors import MLError
    from modelhub.ml.inspect import inspect_model, weights_fingerprint

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


def backbone_branch_points_describe(*, backbone_id: int) -> list[dict] | None:
    """Find every branch point of a backbone version's file and keep the list in Django's cache.

    The file is read once per sha256: a second call (a redelivered message, another version of
    the same file) finds the cache filled and returns it. A file that cannot be cut (several
    outputs, a layout the flat graph does not read) is remembered as having no branch points.
    Returns None when the version no longer exists.
    """
    import tempfile
    from pathlib import Path

    from modelhub.ml.branches import describe_points
    from modelhub.ml.errors import MLError

    version = BackboneVersion.objects.select_related("blob").filter(pk=backbone_id).first()
    if version is None:
        return None
    key = branch_points_cache_key(version.blob.sha256)
    points = cache.get(key)
    if points is not None:
        return points
    try:
        with tempfile.TemporaryDirectory(prefix="modelhub-backbone-") as tmp:
            path = fetch_blob_to(version.blob, Path(tmp), "backbone.keras")
            check_model_file(path)
            points = describe_points(path)
    except MLError as exc:
        logger.info("Backbone %s has no branch points: %s", version.pk, exc)
        points = []
    cache.set(key, points, timeout=None)
    cache.delete(branch_points_pending_key(version.blob.sha256))
    return points
