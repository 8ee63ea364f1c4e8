"""Dashboard pages for assemblies: list, builder (heads, task_id table, size estimate), detail
(build progress, trunk and branches, verification, exports, download, "try it" and usage snippets).

Thin: read through assemblies.selectors, write through assemblies.services (trial predictions
too: a worker computes them), render templates. The size estimate is assemblies.sizes, the
usage snippets assemblies.snippets. The web process never imports TensorFlow.
"""

from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from assemblies.forms import AssemblyBuildForm, TryItForm
from assemblies.inputs import manifest_inputs
from assemblies.models import Assembly, AssemblyExport
from assemblies.selectors import (
    assembly_branches,
    assembly_entry_list,
    assembly_get,
    assembly_list,
    export_list,
    prediction_get,
)
from assemblies.services import (
    assembly_create,
    assembly_export_create,
    prediction_is_finished,
    prediction_run_and_wait,
)
from assemblies.sizes import branch_groups, latest_summary, size_comparison, sizes_of
from assemblies.snippets import usage_snippets
from assemblies.specs import ExportSpec
from backbones.models import BackboneVersion
from backbones.selectors import backbone_list
from core.errors import ApplicationError
from core.pagination import TwoStepPaginator
from dashboard.kit import object_or_404, paginate, parse_id, team_required
from heads.models import HeadVersion
from heads.selectors import (
    head_latest_approved_list,
    head_list,
    head_mark_latest_approved,
    heads_in_task_order,
)

PENDING_STATUSES = (Assembly.Status.QUEUED, Assembly.Status.BUILDING, Assembly.Status.VERIFYING)
# "Try it" answers on the page when the worker answers within this many seconds; otherwise the page
# polls the prediction, so a slow worker never holds a web thread for long.
TRY_IT_WAIT_SECONDS = 2.0


def _relative_diff(check: dict) -> float:
    """The scaled figure (older builds recorded only the absolute one)."""
    return check.get("max_rel_diff", check.get("max_abs_diff", float("inf")))


MAX_SHOWN_ROWS = 8


@team_required
def assembly_list_view(request, membership):
    assemblies = (
        assembly_list(user=request.user)
        .filter(team=membership.team)
        .select_related("created_by")
        .annotate(num_heads=Count("entries"))
        .order_by("-created_at", "-pk")
    )
    return render(request, "assemblies/list.html", {"page": paginate(request, assemblies), "membership": membership})


# Up to this many approved heads, the builder lists them all and ticks them in the browser. Above
# it (10,000 heads on one backbone), it offers "the latest approved version of every task" as one
# tick box, counted and summed in SQL, and lists one page of heads at a time with a server search.
BUILDER_MAX_ROWS = 200
BUILDER_PAGE_SIZE = 50
# The task_id table shows this many rows of an "every task" choice, then how many more.
MAX_TASK_ID_ROWS = 20


@team_required
def assembly_builder_view(request, membership):
    backbones = backbone_list(
        user=request.user, filters={"team": membership.team.slug, "status": BackboneVersion.Status.READY}
    )
    data = request.POST if request.method == "POST" else None
    backbone = _chosen_backbone(backbones, (data or request.GET).get("backbone"))
    approved = (
        head_list(
            user=request.user,
            filters={"team": membership.team.slug, "backbone": backbone.pk, "status": HeadVersion.Status.APPROVED},
        )
        if backbone
        else head_list(user=request.user).none()
    )
    totals, latest_rows = (
        latest_summary(approved, backbone_id=backbone.pk, max_rows=MAX_TASK_ID_ROWS, above=BUILDER_MAX_ROWS)
        if backbone
        else ({"num_approved": 0}, [])
    )
    many = totals["num_approved"] > BUILDER_MAX_ROWS
    candidates = [] if many or not backbone else list(heads_in_task_order(head_mark_latest_approved(heads=approved)))
    form = AssemblyBuildForm(
        data,
        backbones=backbones,
        heads=approved if many else candidates,
        initial={"backbone": backbone.pk if backbone else None, "all_latest": many},
    )
    if data is not None and form.is_valid():
        values = form.cleaned_data
        head_ids = None if values["all_latest"] else values["heads"]
        try:
            assembly, existed = assembly_create(
                team=membership.team, user=request.user, backbone_id=values["backbone"].pk,
                head_ids=head_ids, name=values["name"], task_signatures=values["task_signatures"],
            )  # fmt: skip
        except ApplicationError as exc:
            messages.error(request, exc.message)
        else:
            num_heads = assembly.entries.count() if head_ids is None else len(head_ids)
            if existed:
                messages.info(request, f"These heads on {backbone.label} are already assembled; showing that build.")
            else:
                messages.success(request, f"Assembly queued: {num_heads} heads on {backbone.label}.")
            return redirect("assemblies:detail", pk=assembly.pk)
    elif data is not None:
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, error)
    # A backbone is chosen whenever the team has a ready one (_chosen_backbone falls back to the newest).
    context = {"membership": membership, "form": form, "backbone": backbone, "has_backbones": backbone is not None}
    if many:
        context.update(
            _many_heads_context(
                request, backbone=backbone, approved=approved, totals=totals, latest_rows=latest_rows, data=data
            )
        )
        return render(request, "assemblies/builder.html", context)
    if data is not None:
        selected_ids = {pk for pk in map(parse_id, data.getlist("heads")) if pk is not None}
    else:  # the latest approved version of each task, the default choice of assemblies.services.assembly_create
        selected_ids = {head.pk for head in candidates if head.is_latest_approved}
    selected = [head for head in candidates if head.pk in selected_ids]
    context.update(
        {
            "candidates": [(index, head, head.pk in selected_ids) for index, head in enumerate(candidates)],
            "selected": list(enumerate(selected)),
            "sizes": sizes_of(backbone, selected) if backbone else None,
        }
    )
    return render(request, "assemblies/builder.html", context)


def _many_heads_context(
    request, *, backbone: BackboneVersion, approved, totals: dict, latest_rows: list[HeadVersion], data
) -> dict:
    """The builder's context when the backbone has more approved heads than BUILDER_MAX_ROWS.

    A constant number of queries whatever the number of heads: one page of the (searched)
    approved heads (the counts, byte sums and first rows of the "every task" task_id table come
    from latest_summary).
    """
    search = request.GET.get("q", "").strip()
    shown = approved.filter(task__slug__icontains=search) if search else approved
    paginator = TwoStepPaginator(heads_in_task_order(shown), BUILDER_PAGE_SIZE)
    if not search:
        paginator.count = totals["num_approved"]  # known already: no second COUNT
    page = paginator.get_page(request.GET.get("page"))
    all_latest = data is None or bool(data.get("all_latest"))
    ticked = {pk for pk in map(parse_id, data.getlist("heads")) if pk is not None} if data is not None else set()
    if all_latest:
        selected = latest_rows
        sizes = size_comparison(
            backbone=backbone,
            num_heads=totals["num_latest"],
            heads_bytes=totals["latest_bytes"],
            num_branches=totals["latest_num_branches"],
            branches_bytes=totals["latest_branches_bytes"],
        )
    else:  # a POST of hand-ticked heads came back with an error
        chosen = list(heads_in_task_order(approved.filter(pk__in=ticked)))
        selected = chosen[:MAX_TASK_ID_ROWS]
        sizes = sizes_of(backbone, chosen)
    offset = (page.number - 1) * BUILDER_PAGE_SIZE
    return {
        "many_heads": True,
        "num_approved": totals["num_approved"],
        "latest_totals": {
            "num_heads": totals["num_latest"],
            "heads_bytes": totals["latest_bytes"],
            "num_branches": totals["latest_num_branches"],
            "branches_bytes": totals["latest_branches_bytes"],
        },
        "latest_branches": branch_groups(head_latest_approved_list(heads=approved), max_rows=MAX_TASK_ID_ROWS)
        if totals["latest_num_branches"]
        else [],
        "all_latest": all_latest,
        "search": search,
        "page": page,
        "query": urlencode({"backbone": backbone.pk, **({"q": search} if search else {})}),
        "candidates": [(offset + index, head, head.pk in ticked) for index, head in enumerate(page.object_list)],
        "selected": list(enumerate(selected)),
        "latest_rows": list(enumerate(latest_rows)),
        "num_latest_hidden": max(0, totals["num_latest"] - len(latest_rows)),
        "sizes": sizes,
    }


def _chosen_backbone(backbones, raw_id) -> BackboneVersion | None:
    """Return the backbone named by `raw_id` among `backbones`, else the newest one."""
    if parse_id(raw_id) is not None:
        chosen = backbones.filter(pk=parse_id(raw_id)).first()
        if chosen is not None:
            return chosen
    return backbones.order_by("-created_at").first()


@login_required
def assembly_detail_view(request, pk: int):
    assembly = object_or_404(assembly_get, user=request.user, pk=pk)
    form = TryItForm(manifest=assembly.manifest) if _can_try(assembly) else None
    return render(request, "assemblies/detail.html", _detail_context(assembly, try_form=form))


@login_required
@require_POST
def assembly_try_view(request, pk: int):
    assembly = object_or_404(assembly_get, user=request.user, pk=pk)
    if not _can_try(assembly):
        messages.error(request, f"Assembly {assembly.pk} is '{assembly.status}'; try it once it is ready.")
        return redirect("assemblies:detail", pk=pk)
    form = TryItForm(request.POST, request.FILES, manifest=assembly.manifest)
    trial = None
    if form.is_valid():
        values = form.cleaned_data
        try:
            prediction = prediction_run_and_wait(
                assembly=assembly,
                user=request.user,
                task=None,
                task_id=values["task_id"],
                inputs=values["inputs"],
                wait=TRY_IT_WAIT_SECONDS,
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            if not prediction_is_finished(prediction):
                # Not answered yet: the trial page polls it (static/js/status_poll.js) instead of a held thread.
                return redirect(reverse("assemblies:trial", kwargs={"pk": pk, "pid": prediction.pk}) + "#try-it")
            if prediction.status == prediction.Status.SUCCEEDED:
                trial = _trial_result(assembly, task_id=prediction.task_id, outputs=prediction.outputs)
            else:
                form.add_error(None, f"The prediction failed in the worker: {prediction.error}")
    return render(request, "assemblies/detail.html", _detail_context(assembly, try_form=form, trial=trial))


@login_required
@require_POST
def assembly_export_view(request, pk: int):
    """Request an export (format, quantization) from the detail page's Exports section."""
    assembly = object_or_404(assembly_get, user=request.user, pk=pk)
    try:
        spec = ExportSpec.parse(request.POST)
        export, existed = assembly_export_create(assembly=assembly, user=request.user, spec=spec)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        what = f"The {export.format} export ({export.quantization})"
        messages.success(request, f"{what} is {export.status}." if existed else f"{what} was queued.")
    return redirect(reverse("assemblies:detail", kwargs={"pk": pk}) + "#exports")


@login_required
def assembly_trial_view(request, pk: int, pid: int):
    """The detail page with one trial prediction: its outputs, its error, or a poller while it runs."""
    prediction = object_or_404(prediction_get, user=request.user, assembly_pk=pk, pk=pid)
    assembly = prediction.assembly
    can_try = _can_try(assembly)
    form = TryItForm(manifest=assembly.manifest, initial={"task_id": prediction.task_id}) if can_try else None
    trial = None
    if prediction.status == prediction.Status.SUCCEEDED:
        trial = _trial_result(assembly, task_id=prediction.task_id, outputs=prediction.outputs)
    context = _detail_context(assembly, try_form=form, trial=trial)
    context["trial_prediction"] = prediction
    if prediction.status == prediction.Status.FAILED:
        context["trial_error"] = f"The prediction failed in the worker: {prediction.error}"
    return render(request, "assemblies/detail.html", context)


def _can_try(assembly: Assembly) -> bool:
    return assembly.status == Assembly.Status.READY and bool(assembly.manifest.get("heads"))


def _detail_context(assembly: Assembly, *, try_form: TryItForm | None, trial: dict | None = None) -> dict:
    entries = list(assembly_entry_list(assembly=assembly))
    # The one tolerance the build verified against (relative to max(1, max |output|)). Imported here,
    # not at the top: modelhub.ml.tolerance imports nothing, but the web side imports no modelhub.ml
    # module when it is loaded (.importlinter).
    from modelhub.ml.tolerance import VERIFY_TOLERANCE

    verification = assembly.verification or {}
    checks = [dict(check, passed=_relative_diff(check) <= VERIFY_TOLERANCE) for check in verification.get("heads", [])]
    overall = verification.get("max_abs_diff")
    return {
        "assembly": assembly,
        "entries": entries,
        "branches": assembly_branches(assembly=assembly, entries=entries),
        "pending": assembly.status in PENDING_STATUSES,
        "pending_statuses": " ".join(PENDING_STATUSES),
        "checks": checks,
        "overall_diff": overall,
        "verified": overall is not None
        and _relative_diff(verification) <= VERIFY_TOLERANCE
        and all(c["passed"] for c in checks),
        "atol": VERIFY_TOLERANCE,
        "input_specs": _shown_inputs(assembly),
        "snippets": usage_snippets(assembly) if assembly.manifest.get("heads") else None,
        "try_form": try_form,
        "trial": trial,
        "exports": _exports_shown(assembly),
        "export_formats": AssemblyExport.Format.choices,
        "export_quantizations": AssemblyExport.Quantization.choices,
    }


def _exports_shown(assembly: Assembly) -> list[AssemblyExport]:
    """The assembly's exports, each with the lowest argmax agreement of its report's tasks (or None)."""
    exports = list(export_list(assembly=assembly))
    for export in exports:
        agreements = [t.get("argmax_agreement") for t in (export.report or {}).get("tasks") or []]
        export.min_argmax_agreement = min((a for a in agreements if a is not None), default=None)
    return exports


def _shown_inputs(assembly: Assembly) -> list[dict]:
    """The assembly's serving inputs; before the build has written a manifest, the backbone's."""
    specs = manifest_inputs(assembly.manifest)
    if specs:
        return specs
    planned = (assembly.backbone.spec or {}).get("inputs") or []
    return manifest_inputs({"backbone": {"inputs": [dict(e, shape=[None, *e["shape"]]) for e in planned]}})


def _trial_result(assembly: Assembly, *, task_id: int, outputs: list) -> dict:
    """Pair each output row with the head's label names and mark its argmax."""
    entry = next(e for e in assembly.manifest["heads"] if e["task_id"] == task_id)
    labels = entry.get("labels") or []
    rows = []
    for values in outputs[:MAX_SHOWN_ROWS]:
        best = max(range(len(values)), key=values.__getitem__) if values else None
        rows.append(
            [
                {"label": labels[i] if i < len(labels) else "", "index": i, "value": value, "best": i == best}
                for i, value in enumerate(values)
            ]
        )
    return {
        "task": entry["task"],
        "task_id": task_id,
        "has_labels": bool(labels),
        "rows": rows,
        "num_rows": len(outputs),
        "num_hidden": max(0, len(outputs) - MAX_SHOWN_ROWS),
    }
