"""Worker side: import K full models as one backbone + K draft heads, all or nothing.

Files are read one at a time beside the reference (modelhub.ml.split.split_family):
weights are compared straight from each file, only the backbone and the small heads are
ever deserialised, and head blobs are stored as they are cut. Rows are written in one
short transaction at the end, so a failed import registers nothing.
"""

import logging
from pathlib import Path

from django.db import transaction

from artifacts.services import blob_fetch_verified
from backbones.models import BackboneVersion
from backbones.services import backbone_version_create
from backbones.work.loading import check_model_file
from core.tracked_work import row_finish, run_tracked, work_heartbeat
from heads.models import HeadEvent, HeadVersion, ModelImport
from heads.services import head_version_create, task_get_or_create
from heads.work.model_files import head_output_width, save_head_as_blob, save_model_as_blob

logger = logging.getLogger(__name__)


def import_run(*, import_id: int) -> ModelImport | None:
    """Run the import; on any failing file register nothing and report each failure."""
    return run_tracked(ModelImport, import_id, _run)


def _run(model_import: ModelImport) -> None:
    from modelhub.ml.errors import FamilySplitError, MLError
    from modelhub.ml.inspect import inspect_model, weights_fingerprint
    from modelhub.ml.split.family import ModelSource, split_family

    files = list(model_import.files.select_related("blob").order_by("position"))
    report = [{"filename": f.filename, "task": f.task_slug, "sha256": f.blob.sha256, "ok": False} for f in files]

    def fetcher(file):
        def fetch(folder: Path) -> Path:
            work_heartbeat(model_import)
            return blob_fetch_verified(blob=file.blob, destination=Path(folder) / "model.keras")

        return fetch

    head_blobs: dict[int, object] = {}
    head_specs: dict[int, dict] = {}
    branches: dict[int, tuple[object, dict]] = {}

    def on_head(index: int, head, branch) -> None:
        report[index]["output_width"] = head_output_width(head)
        head_specs[index] = inspect_model(head)
        head_blobs[index] = save_head_as_blob(head, name=files[index].task_slug)
        if branch is not None:
            model, info = branch
            branches[index] = (save_model_as_blob(model, name=f"{files[index].task_slug}-branch"), info.as_dict())

    sources = [ModelSource(label=f.filename, fetch=fetcher(f), head_name=f"{f.task_slug}_head") for f in files]
    try:
        try:
            split = split_family(
                sources,
                feature_layer=model_import.feature_layer or None,
                on_head=on_head,
                check_file=check_model_file,
                backbone_name=model_import.backbone_name,
                branches=model_import.branches,
                min_shared_fraction=model_import.min_shared_fraction,
            )
        except FamilySplitError as exc:
            for index, message in exc.errors.items():
                report[index]["error"] = message
            names = ", ".join(report[i]["filename"] for i in sorted(exc.errors))
            row_finish(
                model_import,
                status=ModelImport.Status.FAILED,
                report=report,
                error=f"Nothing was imported: {len(exc.errors)} of {len(files)} files failed ({names}). "
                "Fix or remove them and import again.",
            )
            return
        except MLError as exc:
            row_finish(
                model_import,
                status=ModelImport.Status.FAILED,
                report=report,
                error=f"Nothing was imported: {exc}",
            )
            return
        for entry, detail in zip(report, split.reports, strict=True):
            entry.update(detail)
        backbone = split.backbone
        fingerprint = weights_fingerprint(backbone)
        feature_name = backbone.layers[-1].name
        backbone_spec = dict(inspect_model(backbone), weights_sha256=fingerprint)
        backbone_blob = save_model_as_blob(backbone, name="backbone")
        summary = {"feature_layer": split.feature_layer, "reason": split.reason, "verification": split.verification}
        if split.trunk is not None:
            summary["trunk"] = split.trunk
        with transaction.atomic():
            version = (
                BackboneVersion.objects.filter(
                    team=model_import.team, weights_sha256=fingerprint, status=BackboneVersion.Status.READY
                )
                .order_by("version")
                .first()
            )
            if version is None:
                version = backbone_version_create(
                    team=model_import.team,
                    user=model_import.created_by,
                    name=model_import.backbone_name,
                    blob=backbone_blob,
                    filename=f"{model_import.backbone_name}.keras",
                    status=BackboneVersion.Status.READY,
                    spec=backbone_spec,
                    weights_sha256=fingerprint,
                    feature_layer=feature_name,
                    origin={"kind": "import", "import": model_import.pk, "feature_layer": split.feature_layer},
                )
            for index, file in enumerate(files):
                task = task_get_or_create(team=model_import.team, slug=file.task_slug)
                head = head_version_create(
                    task=task,
                    backbone=version,
                    blob=head_blobs[index],
                    source_blob=file.blob,
                    user=model_import.created_by,
                    filename=file.filename,
                    status=HeadVersion.Status.DRAFT,
                    output_width=report[index]["output_width"],
                    spec=head_specs[index],
                    origin={"kind": "import", "import": model_import.pk},
                    action=HeadEvent.Action.IMPORT,
                    branch_blob=branches[index][0] if index in branches else None,
                    branch=branches[index][1] if index in branches else None,
                )
                report[index].update(ok=True, head_version=head.pk)
            row_finish(
                model_import,
                status=ModelImport.Status.SUCCEEDED,
                report=report,
                backbone=version,
                feature_layer=split.feature_layer,
                summary=summary,
            )
    except Exception as exc:
        logger.exception("import %s crashed", model_import.pk)
        row_finish(
            model_import,
            status=ModelImport.Status.FAILED,
            report=report,
            error=f"Nothing was imported: the import crashed with {type(exc).__name__}: {exc}",
        )
