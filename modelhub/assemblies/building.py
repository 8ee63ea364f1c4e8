"""Worker side: build, verify, zip and store an assembly's SavedModel (imports TensorFlow)."""

import logging
import tempfile
import zipfile
from pathlib import Path

from modelhub.artifacts.services import blob_store_path
from modelhub.assemblies.models import Assembly
from modelhub.backbones.loading import load_backbone, load_model_blob
from modelhub.core.tracked_work import row_finish, run_tracked, work_heartbeat

logger = logging.getLogger(__name__)
ZIP_DATE = (2020, 1, 1, 0, 0, 0)


def zip_directory(directory: Path, destination: Path, *, root: str = "model") -> Path:
    """Zip a folder deterministically (sorted names, fixed dates) under `root/`."""
    with zipfile.ZipFile(destination, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(f"{root}/{path.relative_to(directory).as_posix()}", date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with open(path, "rb") as src, archive.open(info, "w") as dst:
                while chunk := src.read(1024 * 1024):
                    dst.write(chunk)
    return destination


def assembly_build(*, assembly_id: int) -> None:
    """Build the SavedModel; verify it against backbone + head per task; store it zipped."""
    run_tracked(Assembly, assembly_id, _build)


def _build(assembly: Assembly) -> None:
    from modelhub.ml.assemble import AssemblyHead, build_assembly, verify_assembly
    from modelhub.ml.errors import MLError

    entries = list(assembly.entries.select_related("head", "head__task", "head__blob"))
    try:
        backbone_version = assembly.backbone
        backbone = load_backbone(backbone_version)
        heads = [
            AssemblyHead(
                task=entry.head.task.slug,
                model=load_model_blob(entry.head.blob),
                version=entry.head.version,
                sha256=entry.head.blob.sha256,
                labels=entry.head.labels or None,
            )
            for entry in entries
        ]
        with tempfile.TemporaryDirectory(prefix="modelhub-assembly-") as tmp:
            export_dir = Path(tmp) / "model"
            result = build_assembly(
                backbone=backbone,
                heads=heads,
                export_dir=export_dir,
                verify=False,
                backbone_info={
                    "name": backbone_version.name,
                    "version": backbone_version.version,
                    "sha256": backbone_version.blob.sha256,
                },
            )
            Assembly.objects.filter(pk=assembly.pk).update(status=Assembly.Status.VERIFYING)
            work_heartbeat(assembly, force=True)
            verification = verify_assembly(export_dir, backbone, [head.model for head in heads])
            archive = zip_directory(export_dir, Path(tmp) / "model.zip")
            blob = blob_store_path(path=archive).blob
        row_finish(
            assembly,
            status=Assembly.Status.READY,
            blob=blob,
            manifest=result["manifest"],
            verification=verification,
            saved_model_bytes=result["size_bytes"],
            signatures=["serving_default", *[head.task for head in heads]],
        )
    except MLError as exc:
        row_finish(assembly, status=Assembly.Status.FAILED, error=str(exc))
    except Exception as exc:
        logger.exception("assembly %s build crashed", assembly.pk)
        row_finish(assembly, status=Assembly.Status.FAILED, error=f"Build failed: {type(exc).__name__}: {exc}")
