"""Worker side: an assembly's parts as the ML library takes them, shared by building and exporting.

The build (assemblies.work.building) and the export (assemblies.work.exporting) load the same
components the same way: the backbone version's file (safely, through backbones.work.loading),
each head as packed Dense weights or a Keras model, each head's branch, and the trunk cut at the
branch points. The trial predict and the export read the built SavedModel, extracted once per
sha256 (``saved_model_dir``). TensorFlow is imported inside functions only.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from artifacts.services import blob_fetch_verified
from assemblies.models import Assembly
from backbones.work.loading import fetch_backbone, load_model_blob
from heads.work.model_files import head_weights_of, head_weights_record, packed_head


@dataclass
class Components:
    """An assembly's loaded parts: its entries (rows), the backbone, the heads (modelhub.ml AssemblyHead)."""

    entries: list
    backbone: Any
    backbone_path: Path | None
    heads: list
    folder: Path

    def cut_trunk(self):
        """Return the backbone cut at every branch point of the heads (None when no head has a branch)."""
        return _trunk_for(self.backbone, self.backbone_path, self.heads, self.folder)


@contextmanager
def assembly_components(assembly: Assembly) -> Iterator[Components]:
    """Load the assembly's backbone and heads (files fetched into a temporary folder, removed on exit)."""
    from modelhub.ml.assembly.manifest import AssemblyHead

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
    with tempfile.TemporaryDirectory(prefix="modelhub-backbone-") as folder:
        backbone, backbone_path = fetch_backbone(assembly.backbone, Path(folder))
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
        yield Components(
            entries=entries, backbone=backbone, backbone_path=backbone_path, heads=heads, folder=Path(folder)
        )


def saved_model_dir(assembly: Assembly) -> Path:
    """Return a local, verified, extracted copy of the assembly's SavedModel (cached per sha256)."""
    return _cached_extract(assembly.blob, kind="assemblies") / "model"


def _cached_extract(blob, *, kind: str) -> Path:
    cache = Path(settings.MODELHUB_HOME) / "cache" / kind / blob.sha256
    if (cache / "model" / "saved_model.pb").exists():
        return cache
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache.parent) as tmp:
        archive = blob_fetch_verified(blob=blob, destination=Path(tmp) / "model.zip")
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(Path(tmp) / "out")
        shutil.rmtree(cache, ignore_errors=True)
        (Path(tmp) / "out").rename(cache)
    return cache


def cached_blob_file(blob, *, kind: str, suffix: str) -> Path:
    """Return a local, verified copy of a blob (cached per sha256 under MODELHUB_HOME/cache/<kind>)."""
    path = Path(settings.MODELHUB_HOME) / "cache" / kind / f"{blob.sha256}{suffix}"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        fetched = blob_fetch_verified(blob=blob, destination=Path(tmp) / path.name)
        fetched.replace(path)
    return path


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
