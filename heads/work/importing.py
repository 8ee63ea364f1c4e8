"""Worker side: import K full models as one backbone + one draft head per output, all or nothing.

Files are read one at a time beside the reference (modelhub.ml.split.split_family):
weights are compared straight from each file, only the backbone and the small heads are
ever deserialised, and head blobs are stored as they are cut. Rows are written in one
short transaction at the end, so a failed import registers nothing.

A file with several outputs gives one head per output, each its own task (`<file task>-<output>`
unless the import's tasks mapping names it); the heads of one file point at the file and at each
other through their `origin` (`file` and `siblings`).
"""

import logging
import re
from pathlib import Path

from django.db import transaction

from artifacts.services import blob_fetch_verified
from backbones.models import BackboneVersion
from backbones.services import backbone_version_create
from backbones.work.loading import check_model_file
from core.errors import ValidationError
from core.tracked_work import row_finish, run_tracked, work_heartbeat
from heads.models import HeadEvent, HeadVersion, ModelImport
from heads.services import check_task_slug, head_version_create, task_get_or_create
from heads.work.keras_hub_files import TaskFiles
from heads.work.model_files import head_output_width, save_head_as_blob, save_model_as_blob

logger = logging.getLogger(__name__)


def import_run(*, import_id: int) -> ModelImport | None:
    """Run the import; on any failing file register nothing and report each failure."""
    return run_tracked(ModelImport, import_id, _run_with_options)


def _run_with_options(model_import: ModelImport) -> None:
    """Run with the request's probe_shape for every probe, and keras-hub task files read as full models."""
    from modelhub.ml.probes import probe_shape_override

    with probe_shape_override(model_import.probe_shape), TaskFiles() as task_files:
        _run(model_import, task_files)


def output_task_slug(prefix: str, output: str) -> str:
    """Return the default task of one output of a file with several outputs: `<prefix>-<output>` as a slug."""
    return re.sub(r"[^a-z0-9_-]+", "-", f"{prefix}-{output}".lower()).strip("-_")[:63]


def _head_namer(file):
    """Return ``name_heads(output names) -> task slugs`` for one import file (see ModelSource.name_heads)."""

    def name_heads(outputs: list[str]) -> list[str]:
        mapping = file.output_tasks or {}
        unknown = sorted(set(mapping) - set(outputs))
        if unknown:
            raise ValueError(
                f"Expected the tasks mapping for '{file.filename}' to name its outputs {outputs}, but it names "
                f"{unknown}. Key the mapping by these output names (dict outputs: the key; list outputs: the "
                "output layer's name)."
            )
        if len(outputs) == 1:
            return [mapping.get(outputs[0], file.task_slug)]
        slugs = [mapping.get(output) or output_task_slug(file.task_slug, output) for output in outputs]
        for output, slug in zip(outputs, slugs, strict=True):
            try:
                check_task_slug(slug)
            except ValidationError as exc:
                raise ValueError(
                    f"Output '{output}' of '{file.filename}' has no valid task: {exc.message} Name it in the "
                    f'tasks mapping, e.g. {{"{file.filename}": {{"{output}": "my-task"}}}}.'
                ) from exc
        return slugs

    return name_heads


def _run(model_import: ModelImport, task_files: TaskFiles) -> None:
    from modelhub.ml.errors import FamilySplitError, MLError
    from modelhub.ml.inspect import inspect_model, weights_fingerprint
    from modelhub.ml.split.family import ModelSource, split_family

    files = list(model_import.files.select_related("blob").order_by("position"))
    report = [{"filename": f.filename, "task": f.task_slug, "sha256": f.blob.sha256, "ok": False} for f in files]

    def fetcher(file):
        def fetch(folder: Path) -> Path:
            work_heartbeat(model_import)
            path = blob_fetch_verified(blob=file.blob, destination=Path(folder) / "model.keras")
            return task_files.full_model(file.position, path)

        return fetch

    # index -> one (output name, task slug, blob, spec, output width) per head of the file
    file_heads: dict[int, list[tuple[str, str, object, dict, int]]] = {}
    branches: dict[int, tuple[object, dict]] = {}
    namers = [_head_namer(f) for f in files]

    def on_head(index: int, heads, branch) -> None:
        slugs = namers[index]([output for output, _ in heads])
        file_heads[index] = [
            (output, slug, save_head_as_blob(head, name=slug), inspect_model(head), head_output_width(head))
            for (output, head), slug in zip(heads, slugs, strict=True)
        ]
        if branch is not None:
            model, info = branch
            branches[index] = (save_model_as_blob(model, name=f"{files[index].task_slug}-branch"), info.as_dict())

    sources = [
        ModelSource(label=f.filename, fetch=fetcher(f), head_name=f"{f.task_slug}_head", name_heads=namers[i])
        for i, f in enumerate(files)
    ]
    try:
        try:
            split = split_family(
                sources,
                feature_layer=model_import.feature_layer or None,
                on_head=on_head,
                check_file=check_model_file,
                backbone_name=model_import.backbone_name,
                branches=model_import.branches,
                min_shared_fraction=model_import.min_shared_fraction,
            )
        except FamilySplitError as exc:
            for index, message in exc.errors.items():
                report[index]["error"] = message
            names = ", ".join(report[i]["filename"] for i in sorted(exc.errors))
            row_finish(
                model_import,
                status=ModelImport.Status.FAILED,
                report=report,
                error=f"Nothing was imported: {len(exc.errors)} of {len(files)} files failed ({names}). "
                "Fix or remove them and import again.",
            )
            return
        except MLError as exc:
            row_finish(
                model_import,
                status=ModelImport.Status.FAILED,
                report=report,
                error=f"Nothing was imported: {exc}",
            )
            return
        for entry, detail in zip(report, split.reports, strict=True):
            entry.update(detail)
        for index, rewrite in task_files.rewrites.items():
            report[index]["keras_hub_task"] = rewrite
        report = _report_per_head(report, file_heads)
        backbone = split.backbone
        fingerprint = weights_fingerprint(backbone)
        feature_name = backbone.layers[-1].name
        backbone_spec = dict(inspect_model(backbone), weights_sha256=fingerprint)
        backbone_blob = save_model_as_blob(backbone, name="backbone")
        summary = {"feature_layer": split.feature_layer, "reason": split.reason, "verification": split.verification}
        if split.reference is not None:
            summary["reference"] = split.reference
        if split.trunk is not None:
            summary["trunk"] = split.trunk
        with transaction.atomic():
            version = (
                BackboneVersion.objects.filter(
                    team=model_import.team, weights_sha256=fingerprint, status=BackboneVersion.Status.READY
                )
                .order_by("version")
                .first()
            )
            if version is None:
                version = backbone_version_create(
                    team=model_import.team,
                    user=model_import.created_by,
                    name=model_import.backbone_name,
                    blob=backbone_blob,
                    filename=f"{model_import.backbone_name}.keras",
                    status=BackboneVersion.Status.READY,
                    spec=backbone_spec,
                    weights_sha256=fingerprint,
                    feature_layer=feature_name,
                    origin={"kind": "import", "import": model_import.pk, "feature_layer": split.feature_layer},
                )
            entries = iter(report)
            for index, file in enumerate(files):
                origin = {"kind": "import", "import": model_import.pk}
                outputs = [output for output, *_ in file_heads[index]]
                if len(outputs) > 1:
                    origin["file"] = {"filename": file.filename, "sha256": file.blob.sha256, "outputs": outputs}
                created = []
                for output, slug, blob, spec, width in file_heads[index]:
                    task = task_get_or_create(team=model_import.team, slug=slug)
                    head = head_version_create(
                        task=task,
                        backbone=version,
                        blob=blob,
                        source_blob=file.blob,
                        user=model_import.created_by,
                        filename=file.filename,
                        status=HeadVersion.Status.DRAFT,
                        output_width=width,
                        spec=spec,
                        origin={**origin, "output": output} if len(outputs) > 1 else origin,
                        action=HeadEvent.Action.IMPORT,
                        branch_blob=branches[index][0] if index in branches else None,
                        branch=branches[index][1] if index in branches else None,
                    )
                    next(entries).update(ok=True, head_version=head.pk)
                    created.append(head)
                if len(created) > 1:
                    _link_siblings(created)
            row_finish(
                model_import,
                status=ModelImport.Status.SUCCEEDED,
                report=report,
                backbone=version,
                feature_layer=split.feature_layer,
                summary=summary,
            )
    except Exception as exc:
        logger.exception("import %s crashed", model_import.pk)
        row_finish(
            model_import,
            status=ModelImport.Status.FAILED,
            report=report,
            error=f"Nothing was imported: the import crashed with {type(exc).__name__}: {exc}",
        )


def _report_per_head(report: list[dict], file_heads: dict[int, list]) -> list[dict]:
    """Return the import report with one entry per head: a file with several outputs gives several entries.

    Each entry of such a file keeps the file's fields and adds ``output`` and ``file_outputs``
    (every output of the file); its ``task``, ``output_width``, ``head_layers`` and
    ``head_params`` are the head's own.
    """
    per_head = []
    for index, entry in enumerate(report):
        heads = entry.pop("heads", [])
        outputs = entry.pop("outputs", [])
        for position, (output, slug, _, _, width) in enumerate(file_heads[index]):
            item = dict(
                entry, task=slug, output_width=width, **{k: v for k, v in heads[position].items() if k != "output"}
            )
            if len(outputs) > 1:
                item.update(output=output, file_outputs=outputs)
            per_head.append(item)
    return per_head


def _link_siblings(heads: list[HeadVersion]) -> None:
    """Record in each head's origin the other heads cut from the same file (same transaction)."""
    for head in heads:
        head.origin = dict(
            head.origin,
            siblings=[
                {"head_version": other.pk, "task": other.task.slug, "output": other.origin["output"]}
                for other in heads
                if other.pk != head.pk
            ],
        )
        HeadVersion.objects.filter(pk=head.pk).update(origin=head.origin)
