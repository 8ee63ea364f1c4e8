"""Worker side: import K full models as one backbone + K draft heads, all or nothing."""

import logging
import tempfile
from pathlib import Path

from django.db import transaction

from heads.model_files import head_output_width, save_model_as_blob
from heads.models import HeadEvent, HeadVersion, ModelImport
from heads.services import head_version_create, task_get_or_create
from modelhub.artifacts.services import blob_fetch_verified
from modelhub.backbones.loading import load_model_file
from modelhub.backbones.models import BackboneVersion
from modelhub.backbones.services import backbone_version_create
from modelhub.core.tracked_work import row_claim, row_finish

logger = logging.getLogger(__name__)


def import_run(*, import_id: int) -> ModelImport | None:
    """Run the import; on any failing file register nothing and report each failure."""
    from modelhub.ml.errors import MLError
    from modelhub.ml.inspect import inspect_model, weights_fingerprint
    from modelhub.ml.split import backbone_from_models, extract_head

    model_import = row_claim(
        ModelImport,
        import_id,
        waiting=(ModelImport.Status.QUEUED,),
        working=ModelImport.Status.RUNNING,
        failed=ModelImport.Status.FAILED,
    )
    if model_import is None:
        return None
    files = list(model_import.files.select_related("blob"))
    report = [{"filename": f.filename, "task": f.task_slug, "sha256": f.blob.sha256, "ok": False} for f in files]
    models: dict[int, object] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="modelhub-import-") as tmp:
            for index, file in enumerate(files):
                try:
                    path = blob_fetch_verified(blob=file.blob, destination=Path(tmp) / f"{index}.keras")
                    models[index] = load_model_file(path)
                except MLError as exc:
                    report[index]["error"] = str(exc)
        backbone = None
        if 0 in models:
            try:
                backbone = backbone_from_models([models[0]], model_import.feature_layer)
            except MLError as exc:
                report[0]["error"] = str(exc)
        heads = {}
        for index, model in models.items():
            if backbone is None or "error" in report[index]:
                continue
            try:
                if index > 0:
                    backbone_from_models([models[0], model], model_import.feature_layer, copy=False)
                heads[index] = extract_head(
                    model, backbone, feature_layer=model_import.feature_layer, name=f"{files[index].task_slug}_head"
                )
                report[index]["output_width"] = head_output_width(heads[index])
            except MLError as exc:
                report[index]["error"] = str(exc)
        failures = [entry for entry in report if "error" in entry]
        if failures or backbone is None:
            names = ", ".join(entry["filename"] for entry in failures) or "the first file"
            row_finish(
                model_import,
                status=ModelImport.Status.FAILED,
                report=report,
                error=f"Nothing was imported: {len(failures)} of {len(files)} files failed ({names}). "
                "Fix or remove them and import again.",
            )
            return model_import
        fingerprint = weights_fingerprint(backbone)
        backbone_spec = dict(inspect_model(backbone), weights_sha256=fingerprint)
        backbone_blob = save_model_as_blob(backbone, name="backbone")
        head_blobs = {index: save_model_as_blob(head, name=files[index].task_slug) for index, head in heads.items()}
        head_specs = {index: inspect_model(head) for index, head in heads.items()}
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
                    origin={"kind": "import", "import": model_import.pk},
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
                )
                report[index].update(ok=True, head_version=head.pk)
            row_finish(
                model_import,
                status=ModelImport.Status.SUCCEEDED,
                report=report,
                backbone=version,
            )
        return model_import
    except Exception as exc:
        logger.exception("import %s crashed", import_id)
        row_finish(
            model_import,
            status=ModelImport.Status.FAILED,
            report=report,
            error=f"Nothing was imported: the import crashed with {type(exc).__name__}: {exc}",
        )
        return model_import
