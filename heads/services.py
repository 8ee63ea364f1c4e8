"""Writes for heads: uploads, the review workflow, comments and imports.

Model files are only opened by workers (validation.py, importing.py); these services store
the upload, create rows and queue the work.
"""

import json
import os
import re
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from artifacts.models import Blob
from artifacts.selectors import upload_list_for_team
from artifacts.services import blob_store_path, blob_store_uploaded_file
from backbones.models import BackboneVersion
from backbones.services import check_backbone_name, check_keras_filename
from core.errors import ConflictError, PermissionDeniedError, ValidationError
from core.events import change_check, event_emit
from core.tracked_work import queue_on_commit
from heads.models import HeadComment, HeadEvent, HeadVersion, ModelImport, ModelImportFile, Task
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


# --- Imports ------------------------------------------------------------------------------

# A staged file for an import: (original file name, local path | uploaded file | stored blob).
ImportSource = tuple[str, Path | UploadedFile | Blob]


def _invalid(field: str, message: str, *, code: str = "invalid") -> ValidationError:
    """Return a 400 error whose detail names the request field at fault, as DRF's errors do."""
    return ValidationError(message, code=code, detail={field: [message]})


@contextmanager
def _errors_name_field(field: str):
    """Attach `field` to a ValidationError raised inside that does not name a field yet."""
    try:
        yield
    except ValidationError as exc:
        if exc.detail is None:
            exc.detail = {field: [exc.message]}
        raise


def _import_tasks(raw) -> list[str] | None:
    """Return the task slugs given as a list or a JSON list of strings; None when not given."""
    if raw in (None, ""):
        return None
    try:
        tasks = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        tasks = None
    if not isinstance(tasks, list) or not all(isinstance(slug, str) for slug in tasks):
        example = '["sentiment", "topic"]'
        raise _invalid("tasks", f"tasks must be a list of task slugs, one per file, e.g. {example}; got {raw!r}.")
    return tasks


def _import_uploads(*, team: Team, upload_ids: list[int]) -> list[ImportSource]:
    """Return (filename, blob) of the team's staged uploads, in the order of `upload_ids`.

    Uploads of other teams are reported exactly like ids that do not exist.
    """
    counts = Counter(upload_ids)
    repeated = sorted(upload_id for upload_id, count in counts.items() if count > 1)
    if repeated:
        raise _invalid(
            "uploads",
            f"Each upload may be listed once; {', '.join(map(str, repeated))} listed more than once. "
            "List every file's upload id exactly once.",
        )
    uploads = {upload.pk: upload for upload in upload_list_for_team(team=team, ids=upload_ids)}
    missing = [upload_id for upload_id in upload_ids if upload_id not in uploads]
    if missing:
        raise _invalid(
            "uploads",
            f"Upload{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} not found in team "
            f"'{team.slug}'. Send each file to POST /api/uploads/ with team={team.slug} and use the ids it returns.",
            code="upload_not_found",
        )
    return [(uploads[upload_id].filename, uploads[upload_id].blob) for upload_id in upload_ids]


def _import_blob(source: Path | str | UploadedFile | Blob) -> Blob:
    """Return the stored blob for one import file, storing it first unless it is staged already."""
    if isinstance(source, Blob):
        return source
    if isinstance(source, (str, Path)):
        return blob_store_path(path=Path(source)).blob
    return blob_store_uploaded_file(file=source).blob


def import_create(
    *,
    team: Team,
    user: AbstractBaseUser | None,
    backbone_name: str,
    feature_layer: str = "",
    files: list[tuple[str, Path | UploadedFile]] | None = None,
    upload_ids: list[int] | None = None,
    tasks: list[str] | str | None = None,
    branches: bool = False,
    min_shared_fraction: float = 0.5,
    queue: bool = True,
) -> ModelImport:
    """Record K full-model files and queue their all-or-nothing import.

    Give the files either sent along (`files`) or staged before with POST /api/uploads/
    (`upload_ids`, which costs no new upload: blobs are keyed by sha256).

    Args:
        feature_layer: the last layer of the shared backbone; blank lets the worker pick the
            deepest layer the models share (needs at least two files).
        files: (filename, uploaded file or local path) pairs.
        upload_ids: ids of the team's staged uploads, one per file, in file order.
        tasks: optional list (or JSON list) of task slugs, one per file; else from file names.
        branches: let models own the top of the backbone as branches (else any backbone
            difference fails the import).
        min_shared_fraction: with branches, the least share of the backbone's parameters the
            trunk every model shares must hold (0..1).

    Returns:
        The queued ModelImport, with one ModelImportFile per file.

    Example:
        import_create(team=team, user=user, backbone_name="mobilenet", upload_ids=[4, 5])
    """
    if (files is None) == (upload_ids is None):
        raise TypeError("import_create() takes exactly one of files= or upload_ids=.")
    if not 0.0 <= min_shared_fraction <= 1.0:
        raise _invalid(
            "min_shared_fraction", f"Expected min_shared_fraction between 0 and 1, received {min_shared_fraction}."
        )
    field = "files" if files is not None else "uploads"
    with _errors_name_field("backbone_name"):
        check_backbone_name(backbone_name)
    max_layer_chars = ModelImport._meta.get_field("feature_layer").max_length
    if len(feature_layer) > max_layer_chars:
        raise _invalid(
            "feature_layer", f"feature_layer is {len(feature_layer)} characters long; at most {max_layer_chars}."
        )
    num_files = len(files if files is not None else upload_ids)
    if num_files == 0:
        what = "file" if files is not None else "upload id (from POST /api/uploads/)"
        raise _invalid(field, f"Expected at least one {what} in '{field}', received none.")
    max_files = settings.DATA_UPLOAD_MAX_NUMBER_FILES
    if max_files is not None and num_files > max_files:
        raise _invalid(
            field,
            f"An import takes at most {max_files} files, received {num_files}. Split them into several "
            "imports with the same backbone_name (the shared backbone is stored once), or raise "
            "MODELHUB_MAX_FILES_PER_REQUEST.",
        )
    sources: list[ImportSource] = files if files is not None else _import_uploads(team=team, upload_ids=upload_ids)
    if num_files == 1 and not feature_layer:
        raise _invalid(
            "feature_layer",
            "feature_layer is required when importing a single model: with one file there is no second "
            "model to find the shared backbone layers from. Name the last layer of the backbone, e.g. "
            "'features'.",
        )
    slugs = _import_tasks(tasks)
    if slugs is None:
        slugs = [task_slug_from_filename(name) for name, _ in sources]
        slug_field = field
    elif len(slugs) != num_files:
        raise _invalid("tasks", f"'tasks' has {len(slugs)} entries but {num_files} files were sent; give one per file.")
    else:
        slug_field = "tasks"
    for (name, _), slug in zip(sources, slugs, strict=True):
        with _errors_name_field(field):
            check_keras_filename(name)
        with _errors_name_field(slug_field):
            check_task_slug(slug)
    if len(set(slugs)) != len(slugs):
        raise _invalid(slug_field, f"Each file needs its own task; duplicated task slugs in {slugs}.")
    blobs = [_import_blob(source) for _, source in sources]
    with transaction.atomic():
        model_import = ModelImport(
            team=team,
            backbone_name=backbone_name,
            feature_layer=feature_layer,
            branches=branches,
            min_shared_fraction=min_shared_fraction,
            created_by=user,
        )
        model_import.full_clean()
        model_import.save()
        for position, ((name, _), slug, blob) in enumerate(zip(sources, slugs, blobs, strict=True)):
            ModelImportFile.objects.create(
                model_import=model_import, position=position, filename=os.path.basename(name), task_slug=slug, blob=blob
            )
        if queue:
            queue_on_commit("heads.run_import", model_import.pk)
    return model_import
