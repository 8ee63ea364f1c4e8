"""Celery tasks for backbones (thin; TensorFlow is imported only inside the worker call)."""

from modelhub.celery import app


@app.task(name="backbones.validate")
def validate_backbone(backbone_id: int) -> None:
    """Inspect an uploaded backbone file and mark the version ready, deduplicated or rejected."""
    from backbones.work.validation import backbone_validate

    backbone_validate(backbone_id=backbone_id)


@app.task(name="backbones.describe_branch_points")
def describe_branch_points(backbone_id: int) -> None:
    """Find where heads could branch off a backbone's file (cached per sha256; the web never opens files)."""
    from backbones.work.validation import backbone_branch_points_describe

    backbone_branch_points_describe(backbone_id=backbone_id)
