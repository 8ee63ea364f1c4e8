"""Dashboard pages for training: datasets (list, upload, detail), job forms for each kind, the
jobs list, a job page with live progress and curves, backbone lineage, and forgetting reports.

Thin: read through training.selectors (and the registry's selectors), write through
training.services, show ApplicationError messages as flash messages or form errors, render
templates. The job page follows the job by polling the JSON API (static/js/job_progress.js).
"""

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from backbones.models import BackboneVersion
from backbones.selectors import backbone_get, backbone_list
from core.errors import ApplicationError
from dashboard.kit import object_or_404, paginate, parse_id, query_without_page, team_required
from heads.selectors import head_versions_by_id
from teams.selectors import membership_get
from training.forms import JOB_FORMS, DatasetUploadForm
from training.lineage import backbone_family_graph, family_root
from training.models import Dataset, ForgettingReport, Job
from training.selectors import (
    dataset_fitting_backbones,
    dataset_get,
    dataset_list,
    job_get,
    job_list,
    job_progress_percent,
    job_results,
    report_get,
)
from training.services import dataset_upload, job_cancel, job_create, job_retry, report_decide
from training.specs import stored_backbone_id, stored_dataset_ids, stored_summary

PENDING_JOB = (Job.Status.QUEUED, Job.Status.RUNNING)


# --- Datasets -------------------------------------------------------------------------------


@team_required
def dataset_list_view(request, membership):
    page = paginate(request, dataset_list(user=request.user, team_slug=membership.team.slug))
    return render(request, "training/dataset_list.html", {"page": page, "membership": membership})


@team_required
def dataset_upload_view(request, membership):
    form = DatasetUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            dataset = dataset_upload(team=membership.team, user=request.user, **form.cleaned_data)
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Uploaded dataset '{dataset.name}'. A worker is validating it now.")
            return redirect("training:dataset_detail", pk=dataset.pk)
    return render(request, "training/dataset_upload.html", {"form": form, "membership": membership})


def class_bars(dataset: Dataset) -> list[dict]:
    """The class histogram as rows for a CSS bar chart: label, count and width in percent."""
    histogram = dataset.class_histogram or {}
    labels = dataset.labels or []
    counts = {int(k): int(v) for k, v in histogram.items()}
    top = max(counts.values(), default=0) or 1
    total = sum(counts.values()) or 1
    return [
        {
            "index": index,
            "label": labels[index] if index < len(labels) else f"class {index}",
            "count": count,
            "width": round(100 * count / top, 1),
            "share": round(100 * count / total, 1),
        }
        for index, count in sorted(counts.items())
    ]


@login_required
def dataset_detail_view(request, pk: int):
    dataset = object_or_404(dataset_get, user=request.user, pk=pk)
    jobs = job_list(user=request.user, filters={"team": dataset.team.slug})
    used_by = [job for job in jobs[:200] if dataset.pk in stored_dataset_ids(job.params)][:10]
    return render(
        request,
        "training/dataset_detail.html",
        {
            "dataset": dataset,
            "bars": class_bars(dataset),
            "labels": list(enumerate(dataset.labels or [])),
            "jobs": used_by,
            "preview": dataset.preview or {},
            "fits": dataset_fitting_backbones(dataset=dataset),
        },
    )


# --- Jobs -----------------------------------------------------------------------------------


@team_required
def job_list_view(request, membership):
    filters = {"team": membership.team.slug}
    status = request.GET.get("status", "")
    if status in Job.Status.values:
        filters["status"] = status
    page = paginate(request, job_list(user=request.user, filters=filters))
    for job in page.object_list:
        job.percent = job_progress_percent(job=job)
        job.summary = stored_summary(job.params)
    return render(
        request,
        "training/job_list.html",
        {
            "page": page,
            "membership": membership,
            "statuses": Job.Status.choices,
            "status": filters.get("status", ""),
            "kinds": Job.Kind.choices,
            "query": query_without_page(request),
        },
    )


@team_required
def job_create_view(request, membership):
    kind = request.GET.get("kind") or Job.Kind.TRAIN_HEAD
    if kind not in JOB_FORMS:
        kind = Job.Kind.TRAIN_HEAD
    team_slug = membership.team.slug
    backbones = backbone_list(user=request.user, filters={"team": team_slug, "status": BackboneVersion.Status.READY})
    datasets = dataset_list(user=request.user, team_slug=team_slug).filter(status=Dataset.Status.READY)
    initial = {"backbone": parse_id(request.GET.get("backbone"))} if parse_id(request.GET.get("backbone")) else None
    form = JOB_FORMS[kind](request.POST or None, datasets=datasets, backbones=backbones, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            job = job_create(team=membership.team, user=request.user, spec=form.spec)
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            if job.status == Job.Status.FAILED:
                messages.error(request, "The job failed its checks before training; see below what to change.")
            else:
                messages.success(request, f"Job {job.pk} queued. This page follows its progress.")
            return redirect("training:job_detail", pk=job.pk)
    return render(
        request,
        "training/job_form.html",
        {"form": form, "kind": kind, "kinds": [(k, JOB_FORMS[k].title) for k in JOB_FORMS], "membership": membership},
    )


@login_required
def job_detail_view(request, pk: int):
    job = object_or_404(job_get, user=request.user, pk=pk)
    params = job.params  # stored as given; jobs from before the specs may hold anything
    backbone_id = stored_backbone_id(params)
    backbone = BackboneVersion.objects.filter(pk=backbone_id, team=job.team).first() if backbone_id else None
    datasets = {d.pk: d for d in Dataset.objects.filter(team=job.team, pk__in=stored_dataset_ids(params))}
    return render(
        request,
        "training/job_detail.html",
        {
            "job": job,
            "params": params,
            "backbone": backbone,
            "datasets": [datasets[i] for i in sorted(datasets)],
            "results": job_results(job=job),
            "pending": job.status in PENDING_JOB,
            "percent": job_progress_percent(job=job),
            "params_json": json.dumps(params, indent=2, sort_keys=True),
            "job_data": {
                "id": job.pk,
                "kind": job.kind,
                "status": job.status,
                "progress": job.progress,
                "metrics": job.metrics,
                "log": job.log,
                "error": job.error,
                "result": job.result,
                "cancel_requested": job.cancel_requested,
                "params": params,
            },
            "can_retry": job.status in (Job.Status.FAILED, Job.Status.CANCELLED),
        },
    )


@login_required
@require_POST
def job_cancel_view(request, pk: int):
    job = object_or_404(job_get, user=request.user, pk=pk)
    try:
        job = job_cancel(job=job, user=request.user)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        if job.status == Job.Status.CANCELLED:
            messages.success(request, f"Cancelled job {job.pk}.")
        else:
            messages.info(request, f"Cancelling job {job.pk}: it stops at the next batch and registers nothing.")
    return redirect("training:job_detail", pk=pk)


@login_required
@require_POST
def job_retry_view(request, pk: int):
    job = object_or_404(job_get, user=request.user, pk=pk)
    try:
        new_job = job_retry(job=job, user=request.user)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("training:job_detail", pk=pk)
    messages.success(request, f"Job {new_job.pk} retries job {job.pk} with the same parameters.")
    return redirect("training:job_detail", pk=new_job.pk)


# --- Backbone lineage -------------------------------------------------------------------------


def origin_summary(version: BackboneVersion) -> dict:
    """How a backbone version was made, for display."""
    origin = version.origin or {}
    kind = origin.get("kind") or "upload"
    summary = {"kind": kind, "job": origin.get("job"), "change": "", "max_abs_diff": None, "relative_diff": None}
    if kind == "grow":
        change = origin.get("change") or {}
        if "widen" in change:
            widen = change["widen"] or {}
            summary["change"] = f"widen {widen.get('layer')} to {widen.get('units')} units"
        else:
            summary["change"] = f"insert {change.get('kind')} after {change.get('after_layer')}"
        verification = origin.get("verification") or {}
        summary["max_abs_diff"] = verification.get("max_abs_diff")
        summary["relative_diff"] = verification.get("relative_diff")
        summary["trained"] = bool(origin.get("trained"))
    elif kind == "fine_tune":
        summary["change"] = f"top {origin.get('unfreeze_top')} layers unfrozen"
    elif kind == "import":
        summary["import"] = origin.get("import")
    return summary


@login_required
def backbone_lineage_view(request, pk: int):
    backbone = object_or_404(backbone_get, user=request.user, pk=pk)
    family = list(BackboneVersion.objects.filter(team=backbone.team).select_related("created_by"))
    by_pk = {version.pk: version for version in family}
    root = family_root(by_pk.get(backbone.pk, backbone), by_pk)  # in memory: no query per ancestor
    children: dict[int | None, list[BackboneVersion]] = {}
    for version in sorted(family, key=lambda v: (v.created_at, v.pk)):
        children.setdefault(version.parent_id, []).append(version)

    def node(version: BackboneVersion, depth: int = 0) -> dict:
        kids = children.get(version.pk, []) if depth < 50 else []
        return {
            "version": version,
            "origin": origin_summary(version),
            "current": version.pk == backbone.pk,
            "children": [node(kid, depth + 1) for kid in kids],
        }

    tree = node(root)
    graph = backbone_family_graph(backbone=backbone)
    count = 0
    stack = [tree]
    while stack:
        item = stack.pop()
        count += 1
        stack.extend(item["children"])
    return render(
        request,
        "training/lineage.html",
        {"backbone": backbone, "root": root, "tree": tree, "count": count, "graph": graph},
    )


# --- Forgetting reports -----------------------------------------------------------------------


@login_required
def report_detail_view(request, pk: int):
    report = object_or_404(report_get, user=request.user, pk=pk)
    membership = membership_get(user=request.user, team_slug=report.job.team.slug)
    rows = sorted(report.rows or [], key=lambda row: row.get("delta") or 0)
    head_ids = [row.get("head_version") for row in rows]
    heads = {h.pk: h for h in head_versions_by_id(ids=head_ids, team=report.job.team)}
    worst = min((row.get("delta") or 0 for row in rows), default=0)
    return render(
        request,
        "training/report_detail.html",
        {
            "report": report,
            "membership": membership,
            "rows": [dict(row, head=heads.get(row.get("head_version"))) for row in rows],
            "worst": worst,
            "can_decide": membership.can_review and report.status == ForgettingReport.Status.PENDING,
        },
    )


@login_required
@require_POST
def report_decide_view(request, pk: int, accept: bool):
    report = object_or_404(report_get, user=request.user, pk=pk)
    try:
        report = report_decide(report=report, user=request.user, accept=accept)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        if accept:
            messages.success(
                request,
                f"Accepted. The parent's heads are now approved on {report.backbone.name} v{report.backbone.version}.",
            )
        else:
            messages.success(request, "Rejected. The parent's heads stay on the parent version only.")
    return redirect("training:report_detail", pk=pk)
