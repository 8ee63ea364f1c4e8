"""Worker side: export a ready assembly to ONNX or LiteRT, verified against its SavedModel, stored as a blob.

The components are loaded as the build loads them (assemblies.work.components); the graph made
for export, the conversion and the task-by-task verification are the ML library's
(modelhub.ml.export.export_assembly). Progress goes to the row as the library reports it. A
worker never dies of an input: every failure ends the row with a message saying what to do.
"""

import json
import logging
import tempfile
import time
from pathlib import Path

from artifacts.services import blob_store_path
from assemblies.models import Assembly, AssemblyExport
from assemblies.work.components import assembly_components, saved_model_dir
from core.datasets import DatasetReadError, dataset_reader
from core.events import event_emit
from core.tracked_work import row_finish, run_tracked, work_heartbeat

logger = logging.getLogger(__name__)
# The row's progress is written at most this often (each write is one UPDATE).
PROGRESS_EVERY_SECONDS = 0.5
# A dataset named in the request: the argmax agreement is measured on at most this many of its rows
# (its validation split when it has one), for every task (the library bounds tasks x rows).
DATASET_MAX_ROWS = 256


def export_build(*, export_id: int) -> None:
    """Build, verify and store the export; record the report (or the error) on its row."""
    export = run_tracked(AssemblyExport, export_id, _export, progress={"fraction": 0.0, "message": "starting"})
    if export is not None and export.status in (AssemblyExport.Status.READY, AssemblyExport.Status.FAILED):
        event_emit(
            team_id=export.assembly.team_id,
            event=f"export.{export.status}",
            data={
                "export": export.pk,
                "assembly": export.assembly_id,
                "format": export.format,
                "quantization": export.quantization,
                "status": export.status,
                "error": export.error,
                "size_bytes": export.size_bytes,
            },
        )


def _export(export: AssemblyExport) -> None:
    from modelhub.ml.errors import MLError
    from modelhub.ml.export import export_assembly

    assembly = export.assembly
    if assembly.status != Assembly.Status.READY or assembly.blob_id is None:
        row_finish(
            export,
            status=AssemblyExport.Status.FAILED,
            error=f"Assembly {assembly.pk} is '{assembly.status}', not ready: export it once it is built and verified.",
        )
        return
    report_progress = _progress_writer(export)
    try:
        report_progress(0.02, "loading the assembly's components")
        model_dir = saved_model_dir(assembly)
        with assembly_components(assembly) as parts, tempfile.TemporaryDirectory(prefix="modelhub-export-") as tmp:
            dataset, about_dataset = _dataset(export, [head.task for head in parts.heads], report_progress)
            trunk = parts.cut_trunk()
            out_path = Path(tmp) / f"model.{export.file_extension}"
            report = export_assembly(
                backbone=parts.backbone,
                heads=parts.heads,
                trunk=trunk,
                saved_model_dir=model_dir,
                fmt=export.format,
                quantization=export.quantization,
                out_path=out_path,
                dataset=dataset,
                progress=report_progress,
            )
            if about_dataset and report.get("dataset"):
                report["dataset"] = {**about_dataset, **report["dataset"]}
            if not report.get("passed", False):
                row_finish(
                    export,
                    status=AssemblyExport.Status.FAILED,
                    error=f"The {export.format} export ({export.quantization}) did not pass its verification against "
                    f"the SavedModel (max abs diff {report.get('max_abs_diff')}); it is not offered.",
                    report=report,
                )
                return
            blob = blob_store_path(path=out_path).blob
            table = out_path.with_name(f"{out_path.name}.tasks.json")
            if table.is_file():  # LiteRT's task table (slugs, widths, inputs): shown in the report
                report["task_table"] = json.loads(table.read_text())
        row_finish(
            export,
            status=AssemblyExport.Status.READY,
            blob=blob,
            report=report,
            size_bytes=blob.size_bytes,
            progress={"fraction": 1.0, "message": "verified"},
        )
    except (MLError, DatasetReadError) as exc:
        row_finish(export, status=AssemblyExport.Status.FAILED, error=str(exc))
    except Exception as exc:
        logger.exception("export %s of assembly %s crashed", export.pk, assembly.pk)
        row_finish(
            export,
            status=AssemblyExport.Status.FAILED,
            error=f"The {export.format} export failed: {type(exc).__name__}: {exc}. Nothing was stored; "
            "request it again, and report it if it fails the same way.",
        )


def _dataset(export: AssemblyExport, tasks: list[str], progress) -> tuple[tuple | None, dict]:
    """Return ``(dataset argument for export_assembly, what the report says of the dataset)``.

    The dataset named in the request is checked again (it may have changed since) and read through
    core.datasets (training's reader). Every task gets the argmax agreement; the tasks whose head was
    trained on this dataset also get the accuracy against its labels (class datasets).
    """
    if export.dataset_id is None:
        return None, {}
    assembly, reader = export.assembly, dataset_reader()
    problem = reader.fit_problem(
        dataset_id=export.dataset_id, team_id=assembly.team_id, backbone_id=assembly.backbone_id
    )
    if problem:
        raise DatasetReadError(f"{problem} Nothing was exported; ask again without it or with another dataset.")
    progress(0.03, f"reading dataset {export.dataset_id}")
    rows = reader.read(dataset_id=export.dataset_id, backbone_id=assembly.backbone_id, max_rows=DATASET_MAX_ROWS)
    trained_on = set(assembly.entries.filter(head__dataset_id=export.dataset_id).values_list("task_id", flat=True))
    y = {task: (rows.labels if task_id in trained_on else None) for task_id, task in enumerate(tasks)}
    about = {"id": export.dataset_id, "name": rows.name, "split": rows.split, "split_rows": rows.total_rows}
    return (rows.inputs, y), about


def _progress_writer(export: AssemblyExport):
    """Return progress(fraction, message) writing the row's progress: a new message at once, the same
    message with a new fraction at most every PROGRESS_EVERY_SECONDS."""
    last = {"at": 0.0, "message": None}

    def progress(fraction: float, message: str = "") -> None:
        now, message = time.monotonic(), str(message)[:200]
        if message == last["message"] and now - last["at"] < PROGRESS_EVERY_SECONDS and fraction < 1.0:
            return
        last.update(at=now, message=message)
        value = {"fraction": round(min(max(float(fraction), 0.0), 1.0), 4), "message": message}
        export.progress = value
        AssemblyExport.objects.filter(pk=export.pk, status=AssemblyExport.Status.EXPORTING).update(progress=value)
        work_heartbeat(export)

    return progress
