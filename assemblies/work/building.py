"""Worker side: build, verify, zip and store an assembly's SavedModel (imports TensorFlow)."""

import logging
import tempfile
import zipfile
from pathlib import Path

from artifacts.services import blob_store_path
from assemblies.models import Assembly
from assemblies.work.components import assembly_components
from backbones.work.loading import load_model_blob
from core.events import event_emit
from core.tracked_work import row_finish, run_tracked, work_heartbeat
from heads.services import head_weights_discard

logger = logging.getLogger(__name__)
ZIP_DATE = (2020, 1, 1, 0, 0, 0)
# How many packed heads each build compares with their .keras artifacts.
PACKED_SAMPLE = 4


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
    """Build the SavedModel; verify it against backbone + head per task; store it zipped.

    Announces assembly.ready or assembly.failed (core.events) once the row is finished.
    """
    assembly = run_tracked(Assembly, assembly_id, _build)
    if assembly is not None and assembly.status in (Assembly.Status.READY, Assembly.Status.FAILED):
        event_emit(
            team_id=assembly.team_id,
            event=f"assembly.{assembly.status}",
            data={
                "assembly": assembly.pk,
                "name": assembly.name,
                "backbone": assembly.backbone_id,
                "status": assembly.status,
                "error": assembly.error,
                "heads": list(assembly.entries.values_list("head_id", flat=True)),
                "resolved_from": assembly.resolved_from,
            },
        )


def _build(assembly: Assembly) -> None:
    from modelhub.ml.assembly.build import build_assembly
    from modelhub.ml.assembly.verify import verify_assembly
    from modelhub.ml.errors import MLError

    try:
        backbone_version = assembly.backbone
        with assembly_components(assembly) as parts:
            backbone, heads = parts.backbone, parts.heads
            _check_packed_sample(parts.entries, heads)
            work_heartbeat(assembly, force=True)
            with tempfile.TemporaryDirectory(prefix="modelhub-assembly-") as tmp:
                trunk = parts.cut_trunk()
                export_dir = Path(tmp) / "model"
                result = build_assembly(
                    backbone=backbone,
                    heads=heads,
                    export_dir=export_dir,
                    verify=False,
                    per_head_signatures=assembly.task_signatures,
                    trunk=trunk,
                    backbone_info={
                        "name": backbone_version.name,
                        "version": backbone_version.version,
                        "sha256": backbone_version.blob.sha256,
                    },
                )
                Assembly.objects.filter(pk=assembly.pk).update(status=Assembly.Status.VERIFYING)
                work_heartbeat(assembly, force=True)
                verification = verify_assembly(
                    export_dir, backbone, [head.model for head in heads], branches=[head.branch for head in heads]
                )
                archive = zip_directory(export_dir, Path(tmp) / "model.zip")
                blob = blob_store_path(path=archive).blob
        signatures = ["serving_default", "serving_by_task"]
        if assembly.task_signatures:
            signatures += [head.task for head in heads]
        row_finish(
            assembly,
            status=Assembly.Status.READY,
            blob=blob,
            manifest=result["manifest"],
            verification=verification,
            saved_model_bytes=result["size_bytes"],
            signatures=signatures,
        )
    except MLError as exc:
        row_finish(assembly, status=Assembly.Status.FAILED, error=str(exc))
    except Exception as exc:
        logger.exception("assembly %s build crashed", assembly.pk)
        row_finish(assembly, status=Assembly.Status.FAILED, error=f"Build failed: {type(exc).__name__}: {exc}")


def _check_packed_sample(entries: list, heads: list, sample: int = PACKED_SAMPLE) -> None:
    """Compare a spread of packed heads with their `.keras` artifacts, bit for bit.

    The verification checks the SavedModel against the packed weights; this checks that
    the packed weights still are the artifact's (a damaged store or a packing bug).
    """
    import numpy as np

    from modelhub.ml.errors import AssemblyError
    from modelhub.ml.head_weights import PackedDenseHead, dense_chain_of

    packed = [index for index, head in enumerate(heads) if isinstance(head.model, PackedDenseHead)]
    if not packed:
        return
    chosen = sorted({packed[int(i)] for i in np.linspace(0, len(packed) - 1, min(sample, len(packed)))})
    for index in chosen:
        head = entries[index].head
        from_artifact = dense_chain_of(load_model_blob(head.blob))
        from_packed = heads[index].model.load()
        same = from_artifact is not None and from_artifact.steps == from_packed.steps
        if same:
            arrays = zip(
                [*from_artifact.kernels, *from_artifact.biases],
                [*from_packed.kernels, *from_packed.biases],
                strict=True,
            )
            same = all((a is None and b is None) or np.array_equal(a, b) for a, b in arrays)
        if not same:
            # Derived data: discard this assembly's packed copies and the damaged bytes; the next
            # build packs them again from the artifacts.
            head_weights_discard(sources=[entry.head.blob for entry in entries], packed=head.blob.head_weights.packed)
            raise AssemblyError(
                f"The packed weights of head {head.task.slug} v{head.version} do not match its artifact "
                f"(sha256 {head.blob.sha256[:12]}). The packed copies of this assembly's heads were discarded "
                "and will be packed again from the artifacts: build the assembly again."
            )
