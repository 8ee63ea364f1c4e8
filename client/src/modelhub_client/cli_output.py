"""How the ``modelhub`` command line prints results: the API's JSON, aligned tables, object summaries.

Every human printer takes ``(value, args)``: the value the command's client call returned (after
any waiting) and the parsed command line, which a few printers read (``--follow``, ``--download``).
``--json`` bypasses them all and prints ``value`` as the API sent it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from modelhub_client.models import (
    ApiObject,
    Assembly,
    Backbone,
    Dataset,
    Export,
    Head,
    Job,
    ModelImport,
    Team,
    TrackedObject,
)


def print_json(value: Any) -> None:
    """Print a server object (or a list of them) as the API returned it."""
    if isinstance(value, ApiObject):
        value = value.raw
    elif isinstance(value, list):
        value = [item.raw if isinstance(item, ApiObject) else item for item in value]
    print(json.dumps(value, indent=2, ensure_ascii=False))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, empty: str) -> None:
    """Print rows under headers in aligned columns, or ``empty`` when there are none."""
    if not rows:
        print(empty)
        return
    cells = [[("" if value is None else str(value)) for value in row] for row in rows]
    widths = [max(len(header), *(len(row[i]) for row in cells)) for i, header in enumerate(headers)]
    for row in [list(headers), *cells]:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip())


def human_bytes(size: int | None) -> str:
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(size)


def outcome(obj: TrackedObject) -> int:
    """Return the exit status for an object the command waited for (1 when it failed)."""
    if obj.failed:
        print(f"modelhub: {obj.label} {obj.status}: {obj.error or 'no reason given'}", file=sys.stderr)
        return 1
    return 0


def head_rows(heads: Sequence[Head]) -> list[list[Any]]:
    return [
        [
            head.id,
            head.team,
            head.task,
            f"v{head.version}",
            f"{head.backbone_name} v{head.backbone_version} (#{head.backbone})",
            head.status,
            head.output_width,
            head.created_by,
            (head.review or {}).get("reviewed_by"),
        ]
        for head in heads
    ]


def team_rows(teams: Sequence[Team]) -> list[list[Any]]:
    return [[team.slug, team.name, team.role] for team in teams]


def assembly_rows(assemblies: Sequence[Assembly]) -> list[list[Any]]:
    return [
        [a.id, a.team, a.name, a.backbone, a.status, len(a.tasks or []), human_bytes(a.size_bytes)] for a in assemblies
    ]


HEAD_HEADERS = ["ID", "TEAM", "TASK", "VERSION", "BACKBONE", "STATUS", "WIDTH", "AUTHOR", "REVIEWER"]


def show_head(head: Head, args: argparse.Namespace | None = None) -> None:
    print_table(HEAD_HEADERS, head_rows([head]), empty="")
    if head.error:
        print(f"error: {head.error}")


def show_backbone(backbone: Backbone, args: argparse.Namespace | None = None) -> None:
    print_table(BACKBONE_HEADERS, backbone_rows([backbone]), empty="")
    if backbone.duplicate_of:
        print(f"same weights as backbone {backbone.duplicate_of}")
    if backbone.error:
        print(f"error: {backbone.error}")


def show_dataset(dataset: Dataset, args: argparse.Namespace | None = None) -> None:
    """Print a dataset: its status, inputs, label distribution, first rows and the backbones it fits."""
    print(f"dataset {dataset.id} {dataset.name!r} ({dataset.format}, team {dataset.team}): {dataset.status}")
    if dataset.error:
        print(f"error: {dataset.error}")
    if dataset.num_examples is not None:
        print(f"{dataset.num_examples} examples, {dataset.num_validation or 0} for validation, target {dataset.target}")
    for entry in dataset.inputs:
        print(f"input {entry.get('name')}: {entry.get('kind')} {entry.get('dtype')} {entry.get('shape')}")
    preview = dataset.preview or {}
    if preview.get("label_distribution"):
        print(f"labels ({preview.get('label_order')}): {preview['label_distribution']}")
    for row in preview.get("rows", []):
        print(f"  {row}")
    for fit in dataset.fits:
        print(f"fits {fit.get('label')} (id {fit.get('id')})")


BACKBONE_HEADERS = ["ID", "TEAM", "NAME", "VERSION", "STATUS", "FEATURE LAYER", "SIZE", "CREATED"]


def backbone_rows(backbones: Sequence[Backbone]) -> list[list[Any]]:
    return [
        [
            b.id,
            b.team,
            b.name,
            f"v{b.version}",
            b.status,
            b.feature_layer or "(output)",
            human_bytes(b.size_bytes),
            (b.created_at or "")[:19],
        ]
        for b in backbones
    ]


def _branch_text(branch: dict | None) -> str:
    if not branch:
        return ""
    return f"after {branch['after_layer']}: {len(branch['layers'])} layers, {branch['params']:,} params"


def show_import(model_import: ModelImport, args: argparse.Namespace | None = None) -> None:
    if not model_import.done:
        print(
            f"import {model_import.id} is {model_import.status}. "
            f"Wait for it with: modelhub imports show {model_import.id} --wait"
        )
        return
    rows = [
        [
            entry.get("filename"),
            entry.get("task"),
            entry.get("head_version") or "",
            "ok" if entry.get("ok") else entry.get("error", "not registered"),
            _branch_text(entry.get("branch")),
        ]
        for entry in model_import.report or []
    ]
    print_table(["FILE", "TASK", "HEAD", "RESULT", "BRANCH"], rows, empty="(no per-file report)")
    if model_import.failed:
        return
    layer = model_import.feature_layer or (model_import.summary or {}).get("feature_layer") or ""
    print(
        f"import {model_import.id} {model_import.status}: backbone {model_import.backbone_name} "
        f"(#{model_import.backbone}), feature layer '{layer}', {len(model_import.head_ids)} draft heads "
        f"({', '.join(str(i) for i in model_import.head_ids)})."
    )
    if model_import.head_ids:
        print(f"Next: modelhub heads submit {' '.join(str(i) for i in model_import.head_ids)}")


def show_assembly(assembly: Assembly, args: argparse.Namespace | None = None) -> None:
    """Print an assembly's summary and tasks; with --download, where its zip went."""
    _assembly_summary(assembly)
    if args is not None and getattr(args, "download", None) and not assembly.failed:
        print(f"Downloaded to {args.download} (sha256 verified).")


def _assembly_summary(assembly: Assembly) -> None:
    if not assembly.done:
        print(
            f"assembly {assembly.id} is {assembly.status}. "
            f"Wait for it with: modelhub assemblies show {assembly.id} --wait"
        )
        return
    if assembly.failed:
        return
    reused = " (existing)" if assembly.existing else ""
    print(
        f"assembly {assembly.id}{reused} {assembly.status}: backbone #{assembly.backbone}, "
        f"{len(assembly.tasks or [])} tasks, {human_bytes(assembly.size_bytes)}, sha256 {assembly.sha256}"
    )
    rows = [
        [t.get("task_id"), t.get("task"), t.get("head_version"), f"v{t.get('version')}", t.get("output_width")]
        for t in assembly.tasks or []
    ]
    print_table(["TASK_ID", "TASK", "HEAD", "VERSION", "WIDTH"], rows, empty="")


def show_export(export: Export, args: argparse.Namespace | None = None) -> None:
    """Print an export's status, its verification per task, and where its file went with --download."""
    reused = " (existing)" if export.existing else ""
    print(f"{export.label}{reused}: {export.status}")
    if not export.done:
        progress = export.progress or {}
        if progress.get("message"):
            print(f"progress: {100 * float(progress.get('fraction') or 0):.0f}% {progress['message']}")
        print(
            f"Wait for it with: modelhub export {export.assembly} --format {export.format} "
            f"--quantization {export.quantization} --wait"
        )
        return
    if export.failed:
        return
    report = export.report or {}
    print(
        f"{human_bytes(export.size_bytes)}, sha256 {export.sha256}, verified with {report.get('runtime')}: "
        f"max abs diff {report.get('max_abs_diff')} (passed: {report.get('passed')})"
    )
    rows = [
        [t.get("task_id"), t.get("task"), t.get("max_abs_diff"), t.get("argmax_agreement")]
        for t in report.get("tasks") or []
    ]
    print_table(["TASK_ID", "TASK", "MAX_ABS_DIFF", "ARGMAX_AGREEMENT"], rows, empty="")
    for note in report.get("notes") or []:
        print(f"note: {note}")
    if args is not None and getattr(args, "download", None):
        print(f"Downloaded to {args.download} (sha256 verified).")


def export_rows(exports: Sequence[Export]) -> list[list[Any]]:
    return [
        [e.id, e.format, e.quantization, e.status, human_bytes(e.size_bytes), (e.report or {}).get("max_abs_diff")]
        for e in exports
    ]


def progress_text(job: Job) -> str:
    progress = job.progress or {}
    if job.done or not progress.get("epochs"):
        return ""
    return f"epoch {min(progress.get('epoch', 0) + 1, progress['epochs'])}/{progress['epochs']}"


def job_rows(jobs: Sequence[Job]) -> list[list[Any]]:
    return [[j.id, j.team, j.kind, j.status, progress_text(j), j.created_by, (j.created_at or "")[:19]] for j in jobs]


JOB_HEADERS = ["ID", "TEAM", "KIND", "STATUS", "PROGRESS", "AUTHOR", "CREATED"]


def show_job(job: Job, args: argparse.Namespace | None = None) -> None:
    """Print a job's row, last metrics, result, error and the last log lines (none after --follow)."""
    log_lines = 0 if args is not None and getattr(args, "follow", False) else 10
    print_table(JOB_HEADERS, job_rows([job]), empty="")
    if job.metrics:
        last = job.metrics[-1]
        shown = ", ".join(f"{k}={v:.4f}" for k, v in last.items() if isinstance(v, float))
        print(f"last epoch: {shown}")
    if job.result:
        print(f"result: {json.dumps(job.result)}")
    if job.error:
        print(f"error: {job.error}")
    lines = [line for line in (job.log or "").splitlines() if line.strip()][-log_lines:] if log_lines > 0 else []
    if lines:
        print("log (last lines):")
        for line in lines:
            print(f"  {line}")


@dataclass(frozen=True)
class Table:
    """Print a list (or one object) as rows under ``headers``, or ``empty`` when there is none."""

    headers: Sequence[str]
    rows: Callable[[Sequence[Any]], list[list[Any]]]
    empty: str = ""

    def __call__(self, value: Any, args: argparse.Namespace | None = None) -> None:
        print_table(self.headers, self.rows(value if isinstance(value, list) else [value]), empty=self.empty)
