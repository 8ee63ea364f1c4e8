"""Dashboard pages for heads: list, detail (model card, review panel, history), uploads,
imports of many full models, the review queue, comparing two versions and a task's metrics.

Thin: read through heads.selectors, write through heads.services, show ApplicationError
messages as flash messages or form errors, render templates.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from backbones.models import BackboneVersion
from backbones.selectors import backbone_list
from core.errors import ApplicationError
from dashboard.kit import object_or_404, paginate, parse_id, query_without_page, team_required
from heads.compare import card_diff, head_compare, task_metric_charts
from heads.forms import MAX_TASK_CHOICES, HeadFilterForm, HeadUploadForm, ImportForm
from heads.imports import import_create
from heads.models import HeadVersion, ModelImport
from heads.origin import origin_from_file, origin_siblings
from heads.selectors import (
    head_comment_list,
    head_get,
    head_get_comparable,
    head_history,
    head_list,
    head_provenance_load,
    head_version_authors,
    import_get,
    import_list,
    review_queue,
    task_list,
)
from heads.services import TRANSITIONS, head_comment_add, head_transition, head_upload
from teams.models import Membership
from teams.selectors import membership_get

ACTION_DONE = {
    "submit": "Submitted {head} for review.",
    "approve": "Approved {head}.",
    "request_changes": "Requested changes on {head}.",
    "archive": "Archived {head}.",
}


@team_required
def head_list_view(request, membership):
    team_slug = membership.team.slug
    filter_form = HeadFilterForm(
        request.GET,
        backbones=backbone_list(user=request.user, filters={"team": team_slug}),
        tasks=task_list(user=request.user, team_slug=team_slug)[: MAX_TASK_CHOICES + 1],
    )
    filters = {**filter_form.filters(), "team": team_slug}
    page = paginate(request, head_list(user=request.user, filters=filters))
    return render(
        request,
        "heads/list.html",
        {
            "page": page,
            "filter_form": filter_form,
            "filtered": len(filters) > 1,
            "query": query_without_page(request),
            "membership": membership,
        },
    )


def review_panel(*, head: HeadVersion, membership: Membership, user) -> dict:
    """Decide which review buttons to show, and why the others are missing.

    Mirrors the checks of heads.services.head_transition, which stays the authority: a
    button shown here can still fail (e.g. another reviewer acted first) and shows the error.
    """
    status = head.status
    is_author = head.created_by_id == user.pk
    can_submit = status in TRANSITIONS["submit"][0]
    in_review = status in TRANSITIONS["approve"][0]
    # Four eyes by provenance (heads.selectors.head_version_authors), as head_transition checks.
    authorship = head_version_authors(head=head).get(user.pk) if in_review and membership.can_review else None
    can_review = in_review and membership.can_review and not authorship
    review_note = ""
    if in_review and not can_review:
        if not membership.can_review:
            review_note = (
                f"Waiting for a reviewer. Only reviewers and admins of team '{membership.team.slug}' can approve "
                f"or request changes; you are '{membership.role}'."
            )
        elif is_author:
            review_note = "You authored this head version, so you cannot review it. Another reviewer must."
        else:
            review_note = f"You {'; you '.join(authorship)}, so you cannot review it. Another reviewer must."
    can_archive = status in TRANSITIONS["archive"][0] and (is_author or membership.can_review)
    return {
        "can_submit": can_submit,
        "can_review": can_review,
        "can_archive": can_archive,
        "review_note": review_note,
        "is_author": is_author,
        "any_action": can_submit or can_review or can_archive,
    }


@login_required
def head_detail_view(request, pk: int):
    head = object_or_404(head_get, user=request.user, pk=pk)
    membership = membership_get(user=request.user, team_slug=head.task.team.slug)
    spec = head.spec or {}
    versions = head_list(user=request.user, filters={"team": head.task.team.slug, "task": head.task.slug})
    return render(
        request,
        "heads/detail.html",
        {
            "head": head,
            "membership": membership,
            "model_card": head.description or head.task.description,
            "labels": list(enumerate(head.labels or [])),
            "metrics": sorted((head.metrics or {}).items()),
            "layers": spec.get("layers", []),
            "params": spec.get("params", {}),
            # A head cut from a file with several outputs: the file and its other heads, from the
            # origin's own JSON (ids and slugs recorded at import), so no query per sibling.
            "from_file": origin_from_file(head.origin),
            "siblings": origin_siblings(head.origin),
            "versions": versions,
            "events": head_history(head=head),
            "comments": head_comment_list(head=head),
            "panel": review_panel(head=head, membership=membership, user=request.user),
        },
    )


@login_required
@require_POST
def head_transition_view(request, pk: int):
    action = request.POST.get("action", "")
    if action not in TRANSITIONS:
        # Plain text: the action comes from the request and is never echoed as HTML.
        return HttpResponseBadRequest(
            f"Unknown action {action!r}; expected one of {sorted(TRANSITIONS)}.",
            content_type="text/plain; charset=utf-8",
        )
    head = object_or_404(head_get, user=request.user, pk=pk)
    try:
        head = head_transition(head=head, user=request.user, action=action, comment=request.POST.get("comment", ""))
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, ACTION_DONE[action].format(head=f"{head.task.slug} v{head.version}"))
    return redirect("heads:detail", pk=pk)


@login_required
@require_POST
def head_comment_view(request, pk: int):
    head = object_or_404(head_get, user=request.user, pk=pk)
    try:
        head_comment_add(head=head, user=request.user, body=request.POST.get("body", ""))
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Comment added.")
    return redirect(reverse("heads:detail", args=[pk]) + "#comments")


@team_required
def head_upload_view(request, membership):
    backbones = backbone_list(
        user=request.user, filters={"team": membership.team.slug, "status": BackboneVersion.Status.READY}
    )
    initial = {"backbone": request.GET.get("backbone")} if request.GET.get("backbone") else None
    form = HeadUploadForm(request.POST or None, request.FILES or None, backbones=backbones, initial=initial)
    if request.method == "POST" and form.is_valid():
        values = form.cleaned_data
        try:
            head = head_upload(
                user=request.user, backbone_id=values["backbone"].pk, task=values["task"], file=values["file"],
                labels=values["labels"], description=values["description"],
            )  # fmt: skip
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Uploaded {head.task.slug} v{head.version}. A worker is validating it now.")
            return redirect("heads:detail", pk=head.pk)
    return render(
        request, "heads/upload.html", {"form": form, "membership": membership, "has_backbones": backbones.exists()}
    )


@team_required
def import_create_view(request, membership):
    # Without JavaScript the form posts all files here at once; with it, static/js/import_upload.js
    # sends them one by one to POST /api/uploads/ and creates the import with POST /api/imports/.
    form = ImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        values = form.cleaned_data
        try:
            model_import = import_create(
                team=membership.team, user=request.user, backbone_name=values["backbone_name"],
                feature_layer=values["feature_layer"], files=[(f.name, f) for f in values["files"]],
                tasks=values["tasks"], branches=values["branches"],
                min_shared_fraction=0.5 if values["min_shared_fraction"] is None else values["min_shared_fraction"],
            )  # fmt: skip
        except ApplicationError as exc:
            field = next(iter(exc.detail), None) if isinstance(exc.detail, dict) else None
            form.add_error(field if field in form.fields else None, exc.message)
        else:
            messages.success(request, f"Import of {len(values['files'])} files queued.")
            return redirect("heads:import_detail", pk=model_import.pk)
    recent = import_list(user=request.user).filter(team=membership.team).order_by("-created_at")[:10]
    return render(request, "heads/import.html", {"form": form, "membership": membership, "recent": recent})


@login_required
def import_detail_view(request, pk: int):
    model_import = object_or_404(import_get, user=request.user, pk=pk)
    report = model_import.report or []
    return render(
        request,
        "heads/import_detail.html",
        {
            "model_import": model_import,
            "report": report,
            "files": model_import.files.all(),
            "pending": model_import.status in (ModelImport.Status.QUEUED, ModelImport.Status.RUNNING),
            "num_failed": sum(1 for entry in report if entry.get("error")),
        },
    )


@team_required
def review_queue_view(request, membership):
    page = paginate(request, review_queue(user=request.user, team_slug=membership.team.slug))
    heads = list(page.object_list)
    head_provenance_load(heads=heads)
    for head in heads:  # four eyes by provenance: approval buttons only where the user is no author
        head.your_part = head_version_authors(head=head).get(request.user.pk)
    page.object_list = heads
    return render(request, "heads/review_queue.html", {"page": page, "membership": membership})


# --- Compare two versions, metrics across versions ---------------------------------------------


@login_required
def head_compare_view(request):
    """Compare head versions ?a= and ?b=: metrics, weights, outputs, model cards, the task's trend."""
    a_id, b_id = parse_id(request.GET.get("a")), parse_id(request.GET.get("b"))
    if a_id is None or b_id is None:
        messages.error(request, "Pick two versions to compare (a and b) in a head's version list.")
        return redirect(reverse("heads:detail", args=[a_id]) if a_id is not None else reverse("heads:list"))
    try:
        a = object_or_404(head_get_comparable, user=request.user, pk=a_id)
        b = object_or_404(head_get_comparable, user=request.user, pk=b_id)
    except ApplicationError as exc:  # a version not validated (yet): its file is never read
        messages.error(request, exc.message)
        return redirect(reverse("heads:detail", args=[(exc.detail or {}).get("head", a_id)]))
    versions = list(head_list(user=request.user, filters={"team": a.task.team.slug, "task": a.task.slug}))
    return render(
        request,
        "heads/compare.html",
        {
            "a": a,
            "b": b,
            "comparison": head_compare(a=a, b=b),
            "card": card_diff(a=a, b=b),
            "charts": task_metric_charts(versions=versions),
            "versions": versions,
        },
    )


@team_required
def task_metrics_view(request, membership, slug: str):
    """The metrics of every version of a task of the current team, one chart per metric."""
    versions = list(head_list(user=request.user, filters={"team": membership.team.slug, "task": slug}))
    if not versions:
        raise Http404(f"Task '{slug}' has no head versions in team '{membership.team.slug}'.")
    return render(
        request,
        "heads/task_metrics.html",
        {
            "task": versions[0].task,
            "rows": list(zip(versions, [*versions[1:], None], strict=True)),
            "charts": task_metric_charts(versions=versions),
        },
    )
