"""Worker side: validate an uploaded head version against its backbone."""

import logging
import tempfile
from pathlib import Path

from django.db import transaction

from backbones.work.loading import fetch_blob_to, load_backbone, load_model_file, model_file_limits
from core.tracked_work import row_finish, run_tracked
from heads.models import HeadEvent, HeadVersion
from heads.work.model_files import head_output_width, head_weights_record, save_head_as_blob

logger = logging.getLogger(__name__)


def _shape(tensor) -> list:
    return [None if d is None else int(d) for d in tensor.shape[1:]]


def head_validate(*, head_id: int) -> HeadVersion | None:
    """Set the head version to draft (head checked, or cut out of a full model) or rejected.

    The file is either a head whose input is the backbone's feature output, or a full model
    containing the backbone (bit-identical weights required), from which the head is cut.
    """
    return run_tracked(HeadVersion, head_id, _validate)


def _validate(head: HeadVersion) -> None:
    from modelhub.ml.errors import FeatureShapeMismatchError, MLError
    from modelhub.ml.inspect import check_head_compatible, inspect_model
    from modelhub.ml.probes import check_close, probe_inputs_for
    from modelhub.ml.split.single import split_full_model

    backbone_version = head.backbone
    updates: dict = {}
    try:
        backbone = load_backbone(backbone_version)
        with tempfile.TemporaryDirectory(prefix="modelhub-head-") as tmp:
            path = fetch_blob_to(head.blob, Path(tmp), "upload.keras")
            _refuse_keras_hub_task(path, filename=head.filename)
            model = load_model_file(path)
            feature_shape = _shape(backbone.outputs[0])
            input_shape = _shape(model.inputs[0]) if len(model.inputs) == 1 else None
            backbone_inputs = [_shape(tensor) for tensor in backbone.inputs]
            model_inputs = [_shape(tensor) for tensor in model.inputs]
            if input_shape == feature_shape:
                check_head_compatible(model, feature_shape, backbone_label=backbone_version.label)
                head_model = model
                head_weights_record(blob=head.blob, model=model)
            elif sorted(map(str, model_inputs)) == sorted(map(str, backbone_inputs)):
                backbone_path = Path(tmp) / "backbone.keras"
                backbone.save(backbone_path)
                head_model = split_full_model(backbone_path, path, name=f"{head.task.slug}_head")
                probe = probe_inputs_for(model)
                check_close(
                    model(probe, training=False),
                    head_model(backbone(probe, training=False), training=False),
                    what=f"the head cut from '{model.name}'",
                )
                updates["source_blob"] = head.blob
                updates["blob"] = save_head_as_blob(head_model, name=f"{head.task.slug}-head")
            else:
                raise FeatureShapeMismatchError(
                    f"Expected a head taking features of shape {feature_shape} (the output of "
                    f"{backbone_version.label}) or a full model taking its inputs {backbone_inputs}; "
                    f"the file takes inputs of shape {model_inputs}. Train the head on this backbone or "
                    "pick the backbone version it was trained on."
                )
        width = head_output_width(head_model)
        if head.labels and len(head.labels) != width:
            raise FeatureShapeMismatchError(
                f"labels has {len(head.labels)} entries but the head outputs {width} values per row. "
                f"Give exactly {width} labels, or none."
            )
        updates.update(output_width=width, spec=inspect_model(head_model))
        _finish(head, status=HeadVersion.Status.DRAFT, action=HeadEvent.Action.VALIDATED, **updates)
    except MLError as exc:
        _finish(head, status=HeadVersion.Status.REJECTED, action=HeadEvent.Action.REJECTED, error=str(exc))
    except Exception as exc:  # never leave a row validating
        logger.exception("head %s validation crashed", head.pk)
        _finish(
            head,
            status=HeadVersion.Status.REJECTED,
            action=HeadEvent.Action.REJECTED,
            error=f"Validation failed: {type(exc).__name__}: {exc}",
        )


def _refuse_keras_hub_task(path: Path, *, filename: str) -> None:
    """Refuse a keras-hub task file (``task.save()``) with where it is taken: an import names its backbone layer.

    A head upload is a head or a plain full model on a stored backbone; a task file holds its
    own backbone, which only an import (POST /api/imports/ with ``feature_layer``) stores and splits.
    """
    from modelhub.ml.errors import InvalidModelFileError
    from modelhub.ml.keras_hub_tasks import keras_hub_task_file

    task = keras_hub_task_file(path, **model_file_limits())  # a task saved with its preprocessor: refused here
    if task is not None:
        raise InvalidModelFileError(
            f"'{filename or path.name}' is a keras-hub task ({task}, saved with task.save()). A head upload "
            "takes a head on this backbone's features or a plain full model; import task files through "
            "POST /api/imports/ (the dashboard's Import page) with feature_layer set to the task's backbone "
            "layer ('bert_backbone' unless renamed): the task's backbone becomes the backbone and its layers "
            "after it the head."
        )


def _finish(head: HeadVersion, *, status: str, action: str, error: str = "", **fields) -> None:
    with transaction.atomic():
        old = head.status
        row_finish(head, status=status, error=error, **fields)
        HeadEvent.objects.create(head=head, actor=None, action=action, old_status=old, new_status=status, comment=error)
