"""Writes of model imports: check an import request, store or pick its files, queue the worker.

An import turns K full-model files into one backbone + one draft head per model output (a file
with several outputs gives several heads), all or nothing. This module
is its web side (no model file is opened here); the worker side is heads.work.importing.
"""

import os
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from artifacts.models import Blob
from artifacts.selectors import upload_list_for_team
from artifacts.services import blob_store_path, blob_store_uploaded_file
from backbones.services import check_backbone_name, check_keras_filename
from core.errors import ValidationError
from core.json_bounded import json_loads_bounded
from core.tracked_work import queue_on_commit
from heads.models import ModelImport, ModelImportFile
from heads.probe_shapes import probe_shape_parse
from heads.services import check_task_slug, task_slug_from_filename
from teams.models import Team

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


TASKS_EXAMPLE = {"alpha.keras": {"cls": "sentiment", "reg": "score"}, "beta.keras": "topic"}
TASKS_EXAMPLES = (
    '["sentiment", "topic"] (one task per file, in file order) or {"alpha.keras": {"cls": "sentiment", '
    '"reg": "score"}, "beta.keras": "topic"} (by file name; a file with several outputs maps output names to tasks)'
)

TASKS_HELP = (
    f"Optional: {TASKS_EXAMPLES}. A file with several outputs gives one head per output, each with the task "
    "`<file task>-<output name>` unless the mapping names it. Else from file names."
)


def _import_tasks(raw) -> list[str] | dict[str, str | dict[str, str]] | None:
    """Return the tasks given as a list, a mapping, or either as JSON; None when not given.

    A list holds one task slug per file, in file order. A mapping is keyed by file name; its
    value is the file's task (for a file with several outputs: the prefix of each output's task,
    `<prefix>-<output name>`), or {output name: task} for a file with several outputs. Files
    the mapping leaves out keep the tasks from their file names.
    """
    if raw in (None, ""):
        return None
    try:  # a list of slugs is 1 deep, {file: {output: task}} 2
        tasks = json_loads_bounded(raw, max_depth=2, what="tasks as JSON") if isinstance(raw, str) else raw
    except ValidationError:
        tasks = None
    if isinstance(tasks, list) and all(isinstance(slug, str) for slug in tasks):
        return tasks
    if isinstance(tasks, dict) and all(
        isinstance(value, str)
        or (isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()))
        for value in tasks.values()
    ):
        return tasks
    got = repr(raw) if len(repr(raw)) <= 200 else repr(raw)[:200] + "…"
    raise _invalid("tasks", f"Expected tasks as {TASKS_EXAMPLES}; got {got}.")


def _slugs_from_mapping(
    mapping: dict[str, str | dict[str, str]], names: list[str]
) -> tuple[list[str], list[dict[str, str]]]:
    """Return each file's task slug and {output name: task} from a tasks mapping keyed by file name."""
    unknown = sorted(set(mapping) - set(names))
    if unknown:
        raise _invalid(
            "tasks",
            f"tasks names files that are not in this import: {unknown}. Key it by the files' names: {names}.",
        )
    repeated = sorted({name for name in names if names.count(name) > 1 and name in mapping})
    if repeated:
        raise _invalid(
            "tasks",
            f"Several files are named {repeated}, so a mapping by file name cannot tell them apart. Give tasks "
            "as a list, one per file in file order, or rename the files.",
        )
    slugs, output_tasks = [], []
    for name in names:
        value = mapping.get(name)
        slugs.append(value if isinstance(value, str) else task_slug_from_filename(name))
        outputs = value if isinstance(value, dict) else {}
        for output, slug in outputs.items():
            if not output:
                raise _invalid("tasks", f"tasks for '{name}' maps an empty output name; use the output's name.")
            with _errors_name_field("tasks"):
                check_task_slug(slug)
        output_tasks.append(dict(outputs))
    return slugs, output_tasks


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
    probe_shape: dict | str | None = None,
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
        tasks: optional list of task slugs, one per file, or mapping by file name (as a value or
            JSON): ``{"alpha.keras": {"cls": "sentiment", "reg": "score"}, "beta.keras": "topic"}``.
            Unnamed, a file's task comes from its name, and each output of a file with several
            outputs gets ``<file task>-<output name>`` (dict outputs are named by key, list
            outputs by their layer); the worker checks the output names.
        branches: let models own the top of the backbone as branches (else any backbone
            difference fails the import).
        min_shared_fraction: with branches, the least share of the backbone's parameters the
            trunk every model shares must hold (0..1).
        probe_shape: {input name: shape of one probe row} (or its JSON) for inputs of open
            (None) length; blank lets the worker derive a length every layer accepts.

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
    probe_shape = probe_shape_parse(probe_shape)
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
    output_tasks: list[dict[str, str]] = [{} for _ in sources]
    if slugs is None:
        slugs = [task_slug_from_filename(name) for name, _ in sources]
        slug_field = field
    elif isinstance(slugs, dict):
        slugs, output_tasks = _slugs_from_mapping(slugs, [os.path.basename(name) for name, _ in sources])
        slug_field = "tasks"
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
    named = [slug for outputs in output_tasks for slug in outputs.values()]
    if len(set(named)) != len(named):
        raise _invalid("tasks", f"Each output needs its own task; duplicated task slugs in {named}.")
    blobs = [_import_blob(source) for _, source in sources]
    with transaction.atomic():
        model_import = ModelImport(
            team=team,
            backbone_name=backbone_name,
            feature_layer=feature_layer,
            branches=branches,
            min_shared_fraction=min_shared_fraction,
            probe_shape=probe_shape,
            created_by=user,
        )
        model_import.full_clean()
        model_import.save()
        for position, ((name, _), slug, outputs, blob) in enumerate(
            zip(sources, slugs, output_tasks, blobs, strict=True)
        ):
            ModelImportFile.objects.create(
                model_import=model_import,
                position=position,
                filename=os.path.basename(name),
                task_slug=slug,
                output_tasks=outputs,
                blob=blob,
            )
        if queue:
            queue_on_commit("heads.run_import", model_import.pk)
    return model_import
