"""Writes for heads: versions, uploads, carries, the review workflow, comments, packed weights.

Model files are only opened by workers (heads.work); these services store the upload, create
rows and queue the work. Import requests (K full models at once) are written by heads.imports.
"""

import json
import os
import re
from pathlib import Path

from django.contrib.auth.models import AbstractBaseUser
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import Max, Q
from django.utils import timezone

from artifacts.models import Blob
from artifacts.services import blob_discard_stored, blob_store_uploaded_file
from backbones.models import BackboneVersion
from backbones.services import check_keras_filename
from core.errors import ConflictError, PermissionDeniedError, ValidationError
from core.events import change_check, event_emit
from core.tracked_work import queue_on_commit
from heads.models import HeadComment, HeadEvent, HeadVersion, HeadWeights, Task
from heads.probe_shapes import (  # noqa: F401 - the one reader of probe_shape, public here for training's job specs
    MAX_PROBE_ROW_VALUES,
    PROBE_SHAPE_EXAMPLE,
    probe_shape_parse,
)
from heads.selectors import Authors, head_version_authors
from teams.models import Team
from teams.selectors import membership_get

TASK_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
S = HeadVersion.Status


def check_task_slug(slug: str) -> None:
    if not TASK_SLUG.fullmatch(slug or ""):  # fullmatch: "$" would let "name\n" through
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
    branch_blob: Blob | None = None,
    branch: dict | None = None,
    job=None,
    carried_from: HeadVersion | None = None,
    carried_by: AbstractBaseUser | None = None,
) -> HeadVersion:
    """Create the next version of `task`'s head (numbered safely under concurrency).

    A head that owns the top of its backbone passes its branch artifact and its
    ``{"after_layer", "layers", "params"}`` (both or neither). `job` is the training.Job that made
    it; a carried copy passes the version it copies (`carried_from`) and who carried it
    (`carried_by`, who also appears as the actor of its history), while `user` stays the
    original's author.
    """
    if (branch_blob is None) != (branch is None):
        raise ValueError("Pass branch_blob and branch together, or neither.")
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
                    branch_blob=branch_blob,
                    branch=branch,
                    job=job,
                    carried_from=carried_from,
                    carried_by=carried_by,
                )
                head.full_clean()
                head.save()
                _event(head, actor=carried_by or user, action=action, new=status)
                return head
        except IntegrityError:
            continue
    raise ValidationError(f"Could not number a new version of task '{task.slug}': too many concurrent uploads.")


def heads_carry(
    *,
    parent: BackboneVersion,
    backbone: BackboneVersion,
    user: AbstractBaseUser | None,
    reason: dict,
    head_ids: list[int] | None = None,
    job=None,
) -> list[HeadVersion]:
    """Register the parent's approved heads (or the given ones among them) on a new backbone version.

    Each carried head is a new approved version of its task on `backbone`, reusing the head's
    blob, with `reason` (e.g. {"kind": "grow_preserved", "job": 7}) and the head it came from
    in its origin. Used when a growth preserved the function exactly, and when a reviewer
    accepts a forgetting report. Call it inside the transaction that registers `backbone`.

    Four eyes by provenance: a copy keeps the original's ``created_by``; `user` is recorded as
    ``carried_by``, the original as ``carried_from`` and `job` (the training.Job that made
    `backbone`) as ``job``, so the original's author and the job's requester stay its authors.
    """
    heads = HeadVersion.objects.filter(backbone=parent, status=S.APPROVED).select_related(
        "task", "blob", "dataset", "branch_blob"
    )
    if head_ids is not None:
        heads = heads.filter(pk__in=head_ids)
    carried = []
    for head in heads.order_by("pk"):
        carried.append(
            head_version_create(
                task=task_get_or_create(team=backbone.team, slug=head.task.slug),
                backbone=backbone,
                blob=head.blob,
                user=head.created_by,
                filename=head.filename,
                labels=head.labels,
                description=head.description,
                status=S.APPROVED,
                output_width=head.output_width,
                spec=head.spec,
                metrics=head.metrics,
                origin={**reason, "from_head_version": head.pk},
                action=HeadEvent.Action.CARRY,
                dataset=head.dataset,
                branch_blob=head.branch_blob,
                branch=head.branch,
                job=job,
                carried_from=head,
                carried_by=user,
            )
        )
    return carried


def _ready_backbone(*, user: AbstractBaseUser, backbone_id: int) -> BackboneVersion:
    from backbones.selectors import backbone_get

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


def check_not_author(*, user: AbstractBaseUser, authors: Authors, doing: str, must: str) -> None:
    """Refuse (PermissionDeniedError, 403) a user who is one of `authors` (heads.selectors.head_version_authors).

    The message names every way the user authored the version, e.g. "You requested job 7
    (grow_backbone), which made sentiment v4 (head version 12), so you cannot point alias
    'champion' at it. Four eyes: another reviewer ... must."
    """
    phrases = authors.get(user.pk)
    if phrases:
        raise PermissionDeniedError(
            f"You {'; you '.join(phrases)}, so you cannot {doing}. Four eyes: another reviewer, who did not "
            f"write, carry, derive or request this version, must {must}.",
            detail={"authorship": phrases},
        )


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
        check_not_author(
            user=user,
            authors=head_version_authors(head=head),
            doing=f"{action.replace('_', ' ')} it",
            must=action.replace("_", " ") + " it",
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
        if action == "archive":  # an alias pointing at it refuses (releases)
            change_check(team_id=head.task.team_id, change="head.archive", data={"head_version": locked.pk})
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
        event_emit(
            team_id=head.task.team_id,
            event="head.status_changed",
            data={
                "head_version": locked.pk,
                "task": head.task.slug,
                "version": locked.version,
                "backbone": locked.backbone_id,
                "old_status": old_status,
                "new_status": new_status,
                "action": action,
                "actor": user.get_username(),
                "comment": comment,
            },
        )
    return locked


def head_comment_add(*, head: HeadVersion, user: AbstractBaseUser, body: str) -> HeadComment:
    if not body.strip():
        raise ValidationError("A comment needs some text.")
    membership_get(user=user, team_slug=head.task.team.slug)
    with transaction.atomic():
        comment = HeadComment.objects.create(head=head, author=user, body=body)
        _event(head, actor=user, action=HeadEvent.Action.COMMENT, old=head.status, new=head.status, comment=body)
    return comment


# --- Packed head weights (derived data) ----------------------------------------------------


def head_weights_discard(*, sources: list[Blob], packed: Blob) -> None:
    """Forget the packed weights recorded for the head blobs `sources`, and the damaged `packed` bytes.

    Packed weights are derived from the head artifacts: an assembly build that finds a packed
    copy differing from its artifact discards them, and the next build packs them again.
    """
    with transaction.atomic():
        HeadWeights.objects.filter(Q(source__in=sources) | Q(packed=packed)).delete()
    blob_discard_stored(blob=packed)
