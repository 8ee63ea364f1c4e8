"""Reads of datasets, jobs and forgetting reports, scoped to the user's teams."""

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from backbones.models import BackboneVersion
from heads.selectors import head_versions_by_id
from teams.selectors import scoped_to_member, team_object_get
from training.models import Dataset, ForgettingReport, Job
from training.services import dataset_fit_problem


def dataset_list(*, user: AbstractBaseUser, team_slug: str | None = None) -> QuerySet[Dataset]:
    queryset = scoped_to_member(Dataset.objects.select_related("team", "blob"), user=user)
    return queryset.filter(team__slug=team_slug) if team_slug else queryset


def dataset_get(*, user: AbstractBaseUser, pk) -> Dataset:
    return team_object_get(Dataset.objects.select_related("team", "blob"), user=user, pk=pk, label="Dataset")


MAX_FIT_CHECKS = 500


def dataset_fitting_backbones(*, dataset: Dataset) -> list[dict]:
    """Return the team's ready backbone versions a ready dataset fits: [{"id", "label", "inputs"}].

    One query, whatever the number of backbones (at most MAX_FIT_CHECKS, newest first); the rule
    is training.services.dataset_fit_problem, the one that refuses jobs.
    """
    if dataset.status != Dataset.Status.READY:
        return []
    backbones = (
        BackboneVersion.objects.filter(team_id=dataset.team_id, status=BackboneVersion.Status.READY)
        .only("id", "name", "version", "spec", "team_id", "status")
        .order_by("-created_at")[:MAX_FIT_CHECKS]
    )
    return [
        {"id": backbone.pk, "label": backbone.label, "inputs": (backbone.spec or {}).get("inputs", [])}
        for backbone in backbones
        if not dataset_fit_problem(dataset, backbone)
    ]


def job_list(*, user: AbstractBaseUser, filters: dict | None = None) -> QuerySet[Job]:
    filters = filters or {}
    queryset = scoped_to_member(Job.objects.select_related("team", "created_by", "retried_by"), user=user)
    for field in ("kind", "status"):
        if filters.get(field):
            queryset = queryset.filter(**{field: filters[field]})
    if filters.get("team"):
        queryset = queryset.filter(team__slug=filters["team"])
    return queryset


def job_progress_percent(*, job: Job) -> int:
    """How far a job is, 0..100, from its progress {epoch, epochs, step, steps} (100 once it succeeded)."""
    if job.status == Job.Status.SUCCEEDED:
        return 100
    progress = job.progress or {}
    epochs, steps = progress.get("epochs") or 0, progress.get("steps") or 1
    if not epochs:
        return 0
    done = (progress.get("epoch") or 0) * steps + (progress.get("step") or 0)
    return max(0, min(100, round(100 * done / (epochs * steps))))


def job_get(*, user: AbstractBaseUser, pk) -> Job:
    jobs = Job.objects.select_related("team", "created_by", "retried_by")
    return team_object_get(jobs, user=user, pk=pk, label="Job")


def report_get(*, user: AbstractBaseUser, pk) -> ForgettingReport:
    queryset = ForgettingReport.objects.select_related("job", "job__team", "parent", "backbone")
    report = queryset.filter(pk=pk, job__team__memberships__user=user).first() if user.is_authenticated else None
    if report is None:
        from core.errors import NotFoundError

        raise NotFoundError(f"Forgetting report {pk} was not found in any of your teams.")
    return report


def job_results(*, job: Job) -> dict:
    """Return what a job created, for links: head versions, backbone version, forgetting report.

    A ``fine_tune`` with ``"output": "branch"`` creates no backbone version: ``branch`` is then
    the head's branch from the job's result, ``{"after_layer", "num_layers", "params"}``, with the
    worker's ``note``; both are None for every other job.
    """
    result = job.result or {}
    head_ids = list(result.get("head_versions") or [])
    carried_ids = list(result.get("carried_head_versions") or [])
    heads = {head.pk: head for head in head_versions_by_id(ids=head_ids + carried_ids, team=job.team)}
    backbone = None
    if result.get("backbone_version"):
        backbone = BackboneVersion.objects.filter(pk=result["backbone_version"], team=job.team).first()
    report = ForgettingReport.objects.filter(job=job).first()
    branch = result.get("branch")
    return {
        "heads": [heads[i] for i in head_ids if i in heads],
        "carried": [heads[i] for i in carried_ids if i in heads],
        "backbone": backbone,
        "report": report,
        "verification": result.get("verification"),
        "branch": {
            "after_layer": branch.get("after_layer", ""),
            "num_layers": len(branch.get("layers") or []),
            "params": int(branch.get("params") or 0),
        }
        if isinstance(branch, dict)
        else None,
        "note": result.get("note") or None,
    }
