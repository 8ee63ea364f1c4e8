"""Writes for heads: uploads, the review workflow, comments and imports.

Model files are only opened by workers (validation.py, importing.py); these services store
the upload, create rows and queue the work.
"""

import json
import os
import re
from pathlib import Path

from django.contrib.auth.models import AbstractBaseUser
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from heads.models import HeadComment, HeadEvent, HeadVersion, ModelImport, ModelImportFile, Task
from modelhub.artifacts.models import Blob
from modelhub.artifacts.services import blob_store_path, blob_store_uploaded_file
from modelhub.backbones.models import BackboneVersion
from modelhub.backbones.services import check_backbone_name, check_keras_filename
from modelhub.core.errors import ConflictError, PermissionDeniedError, ValidationError
from modelhub.core.tracked_work import queue_on_commit
from modelhub.teams.models import Team
from modelhub.teams.selectors import membership_get

TASK_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
S = HeadVersion.Status


def check_task_slug(slug: str) -> None:
    if not TASK_SLUG.match(slug or ""):
        raise ValidationError(
            f"Invalid task slug {slug!r}: expected 1-63 lowercase letters, digits, '_' or '-', "
            "starting with a letter or digit (e.g. 'sentiment' or 'box-regression').",
            code="invalid_task",
        )


def task_slug_from_filename(filename: str) -> str:
    """Derive a task slug from a file name: 'Sentiment Model.keras' -> 'sentiment-model'."""
    stem = Path(filename).name.rsplit(".", 1)[0].lower()
    return re.sub(r"[^a-z0-9_-]+", "-", stem).strip("-_")[:63]


def parse_labels(raw) -> list[str]:
    """Accept labels as a JSON list of strings (or a list already parsed)."""
    if raw in (None, ""):
        return []
    try:
        labels = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as exc:
        raise ValidationError(f'labels must be a JSON list of strings, e.g. ["cat", "dog"]; got {raw!r} ({exc}).')
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise ValidationError(f'labels must be a JSON list of strings, e.g. ["cat", "dog"]; got {raw!r}.')
    return labels


def task_get_or_create(*, team: Team, slug: str, labels: list[str] | None = None) -> Task:
    check_task_slug(slug)
    task, created = Task.objects.get_or_create(team=team, slug=slug, defaults={"labels": labels or []})
    return task


def _event(head: HeadVersion, *, actor, action: str, old: str = "", new: str = "", comment: str = "") -> HeadEvent:
    return HeadEvent.objects.create(
        head=head, actor=actor, action=action, old_status=old, new_status=new, comment=comment
    )


def head_version_create(
    *,
    task: Task,
    backbone: BackboneVersion,
    blob: Blob,
    user: AbstractBaseUser | None,
    filename: str = "",
    labels: list[str] | None = None,
    description: str = "",
    status: str = S.VALIDATING,
    output_width: int | None = None,
    spec: dict | None = None,
    metrics: dict | None = None,
    origin: dict | None = None,
    source_blob: Blob | None = None,
    action: str = HeadEvent.Action.UPLOAD,
    dataset=None,
) -> HeadVersion:
    """Create the next version of `task`'s head (numbered safely under concurrency)."""
    for _ in range(5):
        try:
            with transaction.atomic():
                latest = task.versions.aggregate(latest=Max("version"))["latest"] or 0
                head = HeadVersion(
                    task=task,
                    version=latest + 1,
                    backbone=backbone,
                    blob=blob,
                    source_blob=source_blob,
                    filename=filename,
                    labels=labels or [],
                    description=description,
                    status=status,
                    output_width=output_width,
                    spec=spec or {},
                    metrics=metrics or {},
                    origin=origin or {"kind": "upload"},
                    created_by=user,
                    dataset=dataset,
                )
                head.full_clean()
                head.save()
                _event(head, actor=user, action=action, new=status)
                return head
        except IntegrityError:
            continue
    raise ValidationError(f"Could not number a new version of task '{task.slug}': too many concurrent uploads.")


def _ready_backbone(*, user: AbstractBaseUser, backbone_id: int) -> BackboneVersion:
    from modelhub.backbones.selectors import backbone_get

    backbone = backbone_get(user=user, pk=backbone_id)
    if backbone.status != BackboneVersion.Status.READY:
        raise ValidationError(
            f"{backbone.label} is '{backbone.status}', expected 'ready'. "
            + (f"It was rejected: {backbone.error}" if backbone.error else "Wait for its validation to finish.")
        )
    return backbone


def head_upload(
    *, user: AbstractBaseUser, backbone_id: int, task: str, file: UploadedFile, labels=None, description: str = ""
) -> HeadVersion:
    """Store an uploaded head (or full model) and queue its validation against the backbone."""
    check_task_slug(task)
    label_list = parse_labels(labels)
    check_keras_filename(file.name or "")
    backbone = _ready_backbone(user=user, backbone_id=backbone_id)
    stored = blob_store_uploaded_file(file=file)
    with transaction.atomic():
        task_row = task_get_or_create(team=backbone.team, slug=task, labels=label_list)
        head = head_version_create(
            task=task_row,
            backbone=backbone,
            blob=stored.blob,
            user=user,
            filename=os.path.basename(file.name),
            labels=label_list,
            description=description,
        )
        queue_on_commit("heads.validate", head.pk)
    return head


# --- Review workflow ----------------------------------------------------------------------

TRANSITIONS = {
    "submit": ({S.DRAFT, S.CHANGES_REQUESTED}, S.IN_REVIEW, HeadEvent.Action.SUBMIT),
    "approve": ({S.IN_REVIEW}, S.APPROVED, HeadEvent.Action.APPROVE),
    "request_changes": ({S.IN_REVIEW}, S.CHANGES_REQUESTED, HeadEvent.Action.REQUEST_CHANGES),
    "archive": (
        {S.DRAFT, S.IN_REVIEW, S.CHANGES_REQUESTED, S.APPROVED, S.REJECTED},
        S.ARCHIVED,
        HeadEvent.Action.ARCHIVE,
    ),
}


def head_transition(*, head: HeadVersion, user: AbstractBaseUser, action: str, comment: str = "") -> HeadVersion:
    """Apply a review action under a row lock, so two reviewers acting at once cannot both win.

    Raises PermissionDeniedError (403) when the role does not allow it or a reviewer acts on
    their own head, and ConflictError (409) naming the current status when the action is not
    allowed from it.
    """
    allowed_from, new_status, event_action = TRANSITIONS[action]
    membership = membership_get(user=user, team_slug=head.task.team.slug)
    if action in ("approve", "request_changes"):
        if not membership.can_review:
            raise PermissionDeniedError(
                f"Only reviewers and admins of team '{head.task.team.slug}' can {action.replace('_', ' ')}; "
                f"you are '{membership.role}'. Ask a reviewer."
            )
        if head.created_by_id == user.pk:
            raise PermissionDeniedError(
                "You authored this head version, so you cannot review it. Another reviewer must."
            )
    if action == "archive" and head.created_by_id != user.pk and not membership.can_review:
        raise PermissionDeniedError("Only the author, reviewers or admins can archive a head version.")
    with transaction.atomic():
        locked = HeadVersion.objects.select_for_update().get(pk=head.pk)
        if locked.status not in allowed_from:
            raise ConflictError(
                f"Cannot {action.replace('_', ' ')} head version {locked.pk}: its status is "
                f"'{locked.status}', expected one of {sorted(str(s) for s in allowed_from)}.",
                detail={"current_status": locked.status},
                code="invalid_transition",
            )
        old_status = locked.status
        locked.status = new_status
        fields = ["status"]
        if action in ("approve", "request_changes"):
            locked.reviewed_by, locked.reviewed_at = user, timezone.now()
            fields += ["reviewed_by", "reviewed_at"]
        locked.save(update_fields=fields)
        _event(locked, actor=user, action=event_action, old=old_status, new=new_status, comment=comment)
        if comment:
            HeadComment.objects.create(head=locked, author=user, body=comment)
    return locked


def head_comment_add(*, head: HeadVersion, user: AbstractBaseUser, body: str) -> HeadComment:
    if not body.strip():
        raise ValidationError("A comment needs some text.")
    membership_get(user=user, team_slug=head.task.team.slug)
    with transaction.atomic():
        comment = HeadComment.objects.create(head=head, author=user, body=body)
        _event(head, actor=user, action=HeadEvent.Action.COMMENT, old=head.status, new=head.status, comment=body)
    return comment


# --- Imports ------------------------------------------------------------------------------


def import_create(
    *,
    team: Team,
    user: AbstractBaseUser | None,
    backbone_name: str,
    feature_layer: str,
    files: list[tuple[str, Path | UploadedFile]],
    tasks=None,
    queue: bool = True,
) -> ModelImport:
    """Store K full-model files and queue their all-or-nothing import.

    Args:
        files: (filename, uploaded file or local path) pairs.
        tasks: optional JSON list (or list) of task slugs, one per file; else from file names.
    """
    check_backbone_name(backbone_name)
    if not feature_layer:
        raise ValidationError("feature_layer is required: the name of the layer whose output feeds the heads.")
    if not files:
        raise ValidationError("Expected at least one file in 'files', received none.")
    slugs = parse_labels(tasks) if tasks not in (None, "") else [task_slug_from_filename(name) for name, _ in files]
    if len(slugs) != len(files):
        raise ValidationError(f"'tasks' has {len(slugs)} entries but {len(files)} files were sent; give one per file.")
    for (name, _), slug in zip(files, slugs, strict=True):
        check_keras_filename(name)
        check_task_slug(slug)
    if len(set(slugs)) != len(slugs):
        raise ValidationError(f"Each file needs its own task; duplicated task slugs in {slugs}.")
    blobs = [
        (
            blob_store_path(path=Path(source))
            if isinstance(source, (str, Path))
            else blob_store_uploaded_file(file=source)
        ).blob
        for _, source in files
    ]
    with transaction.atomic():
        model_import = ModelImport.objects.create(
            team=team, backbone_name=backbone_name, feature_layer=feature_layer, created_by=user
        )
        for position, ((name, _), slug, blob) in enumerate(zip(files, slugs, blobs, strict=True)):
            ModelImportFile.objects.create(
                model_import=model_import, position=position, filename=os.path.basename(name), task_slug=slug, blob=blob
            )
        if queue:
            queue_on_commit("heads.run_import", model_import.pk)
    return model_import
