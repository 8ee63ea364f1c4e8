"""Worker side: build, verify, zip and store an assembly's SavedModel (imports TensorFlow)."""

import logging
import tempfile
import zipfile
from pathlib import Path

from artifacts.services import blob_store_path
from assemblies.models import Assembly
from backbones.work.loading import fetch_backbone, load_model_blob
from core.events import event_emit
from core.tracked_work import row_finish, run_tracked, work_heartbeat
from heads.services import head_weights_discard
from heads.work.model_files import head_weights_of, head_weights_record, packed_head

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
    from modelhub.ml.assembly.manifest import AssemblyHead
    from modelhub.ml.assembly.verify import verify_assembly
    from modelhub.ml.errors import MLError

    entries = list(
        assembly.entries.select_related(
            "head",
            "head__task",
            "head__blob",
            "head__branch_blob",
            "head__blob__head_weights",
            "head__blob__head_weights__packed",
        )
    )
    backbone_dir = tempfile.TemporaryDirectory(prefix="modelhub-backbone-")  # the fetched file, cut again below
    try:
        backbone_version = assembly.backbone
        backbone, backbone_path = fetch_backbone(backbone_version, Path(backbone_dir.name))
        heads = [
            AssemblyHead(
                task=entry.head.task.slug,
                model=_head_for_assembly(entry.head.blob),
                version=entry.head.version,
                sha256=entry.head.blob.sha256,
                labels=entry.head.labels or None,
                branch=_branch_for_assembly(entry.head),
            )
            for entry in entries
        ]
        _check_packed_sample(entries, heads)
        work_heartbeat(assembly, force=True)
        with tempfile.TemporaryDirectory(prefix="modelhub-assembly-") as tmp:
            trunk = _trunk_for(backbone, backbone_path, heads, Path(tmp))
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
    finally:
        backbone_dir.cleanup()


def _branch_for_assembly(head):
    """The head's branch as the assembly needs it (its Keras model, loaded safely), or None."""
    from modelhub.ml.assembly.trunk import AssemblyBranch

    if head.branch_blob_id is None:
        return None
    info = head.branch or {}
    return AssemblyBranch(
        after_layer=info.get("after_layer", ""),
        model=load_model_blob(head.branch_blob),
        sha256=head.branch_blob.sha256,
        layers=list(info.get("layers", [])),
    )


def _trunk_for(backbone, backbone_path: Path | None, heads: list, folder: Path):
    """The backbone cut at every branch point of the heads (None when no head has a branch).

    Cut from the stored file when the backbone is that file as it is; otherwise (a file cut
    at a feature layer inside it) from the loaded backbone saved again.
    """
    from modelhub.ml.branches import cut_backbone

    points = {head.branch.after_layer for head in heads if head.branch is not None}
    if not points:
        return None
    if backbone_path is None:
        backbone_path = folder / "backbone.keras"
        backbone.save(backbone_path)
    return cut_backbone(backbone_path, points, include_top=any(head.branch is None for head in heads))


def _head_for_assembly(blob):
    """The head as the assembly needs it: its packed Dense weights when it has them, else Keras.

    A head without recorded weights (stored before they existed) is loaded once with Keras
    and its weights are recorded, so the next assembly reads them directly.
    """
    weights = head_weights_of(blob)
    if weights is not None and weights.packed_id is not None:
        return packed_head(weights)
    model = load_model_blob(blob)
    if weights is None:
        head_weights_record(blob=blob, model=model)
    return model


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
