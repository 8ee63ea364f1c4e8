"""Build an assembly: check the heads, write the SavedModel and its manifest, then verify it.

This is the entry point (:func:`build_assembly`); the manifest (:mod:`.manifest`), the
``tf.Module`` (:mod:`.module`) and the verification (:mod:`.verify`) each have their own module.
"""

from __future__ import annotations

import gc
import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from modelhub.ml.assembly.manifest import MANIFEST_PATH, AssemblyHead, build_manifest, manifest_json
from modelhub.ml.assembly.module import build_module
from modelhub.ml.assembly.verify import verify_assembly
from modelhub.ml.branches import Trunk
from modelhub.ml.errors import AssemblyError

# Above this many bytes of variables, the module is collected right after the save, before the
# verification loads its own copy (10,000 Dense(10) heads: 512 MB); a collection costs ~0.3 s.
COLLECT_AFTER_SAVE_BYTES = 128 * 2**20


def build_assembly(
    *,
    backbone: keras.Model,
    heads: Sequence[AssemblyHead],
    export_dir: str | os.PathLike[str],
    backbone_info: dict[str, Any],
    probe_inputs: Any = None,
    verify: bool = True,
    per_head_signatures: bool = False,
    trunk: Trunk | None = None,
) -> dict[str, Any]:
    """Write one SavedModel serving every head on one backbone, and verify it.

    Args:
        backbone: the backbone Keras model (single input, single feature output).
        heads: the heads; their order defines ``task_id`` (0..N-1).
        export_dir: where to write the SavedModel; must not exist or be empty.
        backbone_info: ``{"name": str, "version": int, "sha256": str}`` for the manifest.
        probe_inputs: inputs for verification (an array, or a dict by input name);
            deterministic ones when None.
        verify: verify the written SavedModel (see :func:`verify_assembly`).
        per_head_signatures: also add one signature per task slug (off by default). Each
            one captures every backbone variable handle, which costs ~62 KB of graph and
            ~0.4 s of tracing per head on MobileNetV2. ``serving_default(inputs, task_id)``
            and ``serving_by_task(inputs, task)`` are always there.
        trunk: the backbone cut at every branch point of the heads' branches
            (:func:`modelhub.ml.branches.cut_backbone`, with its top when some head has no
            branch); required when a head has a branch. The SavedModel then stores the trunk
            segments instead of the backbone (the same weights, once) and each branch once.

    Returns:
        ``{"export_dir": str, "manifest": dict, "size_bytes": int,
        "verification": dict | None}``.

    Raises:
        AssemblyError: bad heads (empty, duplicate tasks, wrong feature shape).
        AssemblyVerificationError: the SavedModel does not match the components.

    Example:
        >>> result = build_assembly(backbone=bb, heads=[AssemblyHead("topic", head, 1, sha)],
        ...                         export_dir="out/asm", backbone_info={"name": "bb",
        ...                         "version": 1, "sha256": bb_sha})
        >>> result["verification"]["max_abs_diff"] <= 1e-5
        True
    """
    export_dir = Path(export_dir)
    if export_dir.exists() and any(export_dir.iterdir()):
        raise AssemblyError(
            f"Expected an empty or missing export directory, '{export_dir}' has files. Pass a fresh directory."
        )
    manifest = build_manifest(
        backbone=backbone,
        heads=heads,
        backbone_info=backbone_info,
        per_head_signatures=per_head_signatures,
        trunk=trunk,
    )
    module, signatures = build_module(backbone, heads, manifest, trunk)
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".assembly-", dir=export_dir.parent))
    try:
        tf.saved_model.save(module, str(staging), signatures=signatures)
        held = sum(int(np.prod(v.shape)) * v.dtype.size for v in module.variables)
        del module, signatures  # the stacked head variables; the verification loads its own copy
        if held > COLLECT_AFTER_SAVE_BYTES:
            gc.collect()
        (staging / "assets").mkdir(exist_ok=True)
        (staging / MANIFEST_PATH).write_text(manifest_json(manifest))
        if export_dir.exists():
            export_dir.rmdir()
        os.replace(staging, export_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    verification = None
    if verify:
        verification = verify_assembly(
            export_dir, backbone, [head.model for head in heads], probe_inputs, branches=[h.branch for h in heads]
        )
    return {
        "export_dir": str(export_dir),
        "manifest": manifest,
        "size_bytes": directory_bytes(export_dir),
        "verification": verification,
    }


def directory_bytes(path: str | os.PathLike[str]) -> int:
    """Return the total size of the files under ``path``."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def variables_sha256(export_dir: str | os.PathLike[str]) -> str:
    """Return a sha256 over every variable (name, dtype, shape, bytes) saved in an assembly."""
    reader = tf.train.load_checkpoint(str(Path(export_dir) / "variables" / "variables"))
    digest = hashlib.sha256()
    for name in sorted(reader.get_variable_to_shape_map()):
        value = np.asarray(reader.get_tensor(name))
        digest.update(f"{name}:{value.dtype.str}:{list(value.shape)}\n".encode())
        digest.update(value.tobytes() if value.dtype != object else repr(value).encode())
    return digest.hexdigest()
