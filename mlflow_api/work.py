"""Worker side: compose a head version with its backbone (and branch) into one `.keras` file, verify it, store it.

The parts are fetched and loaded safely (backbones.work.loading: checksum verified, the one
untrusted reader, the configured limits); composing, saving, reloading with
keras.saving.load_model and checking against the parts run one after the other is the ML
library's (modelhub.ml.full_model). The MLmodel file says what the file is. A worker never dies
of an input: every failure ends the row with a message saying what to do.
"""

import json
import logging
import tempfile
from pathlib import Path

from artifacts.services import blob_store_path
from backbones.work.loading import fetch_backbone, load_model_blob
from core.tracked_work import row_finish, run_tracked
from mlflow_api.models import FullModelArtifact

logger = logging.getLogger(__name__)


def full_model_build(*, artifact_id: int) -> None:
    """Build the full model of the row's head version; record the blob and MLmodel (or the error) on the row."""
    run_tracked(FullModelArtifact, artifact_id, _build)


def _build(artifact: FullModelArtifact) -> None:
    from modelhub.ml.errors import MLError
    from modelhub.ml.full_model import save_full_model

    head = artifact.head
    name = f"{head.task.team.slug}.{head.task.slug}"
    try:
        with tempfile.TemporaryDirectory(prefix="modelhub-full-model-") as tmp:
            backbone, _ = fetch_backbone(head.backbone, Path(tmp))
            head_model = load_model_blob(head.blob, Path(tmp))
            branch = load_model_blob(head.branch_blob, Path(tmp)) if head.branch_blob_id else None
            after_layer = (head.branch or {}).get("after_layer", "") if branch is not None else ""
            path = Path(tmp) / "model.keras"
            report = save_full_model(backbone, head_model, path, branch=branch, after_layer=after_layer, name=name)
            blob = blob_store_path(path=path).blob
        row_finish(
            artifact,
            status=FullModelArtifact.Status.READY,
            blob=blob,
            mlmodel=mlmodel_text(head=head, name=name, sha256=blob.sha256, report=report),
            verification=report,
        )
    except MLError as exc:
        row_finish(artifact, status=FullModelArtifact.Status.FAILED, error=str(exc))
    except Exception as exc:
        logger.exception("full model of head version %s crashed", head.pk)
        row_finish(
            artifact,
            status=FullModelArtifact.Status.FAILED,
            error=f"Composing {name} v{head.version} failed: {type(exc).__name__}: {exc}. Nothing was stored; "
            "ask again, and report it if it fails the same way.",
        )


def mlmodel_text(*, head, name: str, sha256: str, report: dict) -> str:
    """Return the MLmodel file (YAML; written as JSON values, which YAML reads) describing the composed file."""
    import keras

    inputs = [
        {"type": "tensor", "name": spec["name"], "tensor-spec": {"dtype": spec["dtype"], "shape": spec["shape"]}}
        for spec in report["inputs"]
    ]
    outputs = [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": report["output_shape"]}}]
    metadata = {
        "modelhub_head_version": head.pk,
        "modelhub_task": head.task.slug,
        "modelhub_version": head.version,
        "modelhub_status": head.status,
        "modelhub_backbone": f"{head.backbone.name} v{head.backbone.version}",
        "modelhub_branch_after": (head.branch or {}).get("after_layer") if head.branch_blob_id else None,
        "labels": head.labels or head.task.labels or [],
        "sha256": sha256,
        "verification": {key: report[key] for key in ("max_abs_diff", "tolerance") if key in report},
        "load_with": "keras.saving.load_model('model.keras')",
    }
    lines = [
        "artifact_path: model",
        "flavors:",
        "  keras:",
        f"    data: {json.dumps('model.keras')}",
        f"    keras_version: {json.dumps(keras.__version__)}",
        f"    keras_backend: {json.dumps(keras.backend.backend())}",
        "    save_format: keras",
        f"model_uuid: {json.dumps(sha256[:32])}",
        f"registered_model_name: {json.dumps(name)}",
        "signature:",
        f"  inputs: {json.dumps(json.dumps(inputs))}",
        f"  outputs: {json.dumps(json.dumps(outputs))}",
        f"metadata: {json.dumps(metadata)}",
    ]
    return "\n".join(lines) + "\n"
