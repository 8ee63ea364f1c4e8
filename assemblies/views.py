"""Dashboard pages for assemblies: list, builder (heads, task_id table, size estimate), detail
(build progress, trunk and branches, verification, download, "try it" and usage snippets).

Thin: read through assemblies.selectors, write through assemblies.services, run trial
predictions through assemblies.predicting (a worker computes them), render templates. The web
process never imports TensorFlow.
"""

import json
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.db.models import BigIntegerField, Count, Max, Q, Sum
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Collate
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from assemblies.forms import AssemblyBuildForm, TryItForm
from assemblies.models import Assembly
from assemblies.predicting import (
    EXAMPLE_TEXTS,
    describe_input,
    dtype_kind,
    example_dims,
    example_row,
    manifest_inputs,
    prediction_is_finished,
    prediction_run_and_wait,
)
from assemblies.selectors import (
    assembly_branches,
    assembly_entry_list,
    assembly_get,
    assembly_list,
    prediction_get,
)
from assemblies.services import assembly_create, heads_in_task_order
from backbones.models import BackboneVersion
from backbones.selectors import backbone_list
from core.errors import ApplicationError
from core.pagination import TwoStepPaginator
from dashboard.context_processors import current_membership
from dashboard.shortcuts import object_or_404, paginate, parse_id
from heads.models import HeadVersion
from heads.selectors import head_is_latest_approved, head_latest_approved_list, head_list

PENDING_STATUSES = (Assembly.Status.QUEUED, Assembly.Status.BUILDING, Assembly.Status.VERIFYING)
# "Try it" answers on the page when the worker answers within this many seconds; otherwise the page
# polls the prediction, so a slow worker never holds a web thread for long.
TRY_IT_WAIT_SECONDS = 2.0
# The tolerance modelhub.ml.assemble verifies against (VERIFY_ATOL, relative to max(1, max |output|));
# not imported: it pulls in TensorFlow.
VERIFY_ATOL = 1e-5


def _relative_diff(check: dict) -> float:
    """The scaled figure (older builds recorded only the absolute one)."""
    return check.get("max_rel_diff", check.get("max_abs_diff", float("inf")))


MAX_SHOWN_ROWS = 8
MAX_INLINE_VALUES = 64
PYTHON_HEADER = """import numpy as np
import tensorflow as tf

model = tf.saved_model.load("model")  # the unzipped folder
"""


@login_required
def assembly_list_view(request):
    membership = current_membership(request)
    if membership is None:
        return render(request, "dashboard/no_team.html")
    assemblies = (
        assembly_list(user=request.user)
        .filter(team=membership.team)
        .select_related("created_by")
        .annotate(num_heads=Count("entries"))
        .order_by("-created_at", "-pk")
    )
    return render(request, "assemblies/list.html", {"page": paginate(request, assemblies), "membership": membership})


def size_comparison(
    *, backbone: BackboneVersion, num_heads: int, heads_bytes: int, num_branches: int = 0, branches_bytes: int = 0
) -> dict:
    """Estimate one merged model against N separate models from the stored blob sizes.

    The merged model stores the backbone once (the trunk), each branched head's branch (the top
    layers it owns) and every head. A separate full model is a whole backbone plus its head, also
    for a branched head (its own top layers replace the backbone's, they do not add to them), so N
    separate models take N x backbone + the heads, and the merge saves (N - 1) x backbone - branches.
    """
    backbone_bytes = backbone.blob.size_bytes
    merged = backbone_bytes + branches_bytes + heads_bytes
    separate = num_heads * backbone_bytes + heads_bytes
    return {
        "num_heads": num_heads,
        "backbone_bytes": backbone_bytes,
        "heads_bytes": heads_bytes,
        "num_branches": num_branches,
        "branches_bytes": branches_bytes,
        "merged_bytes": merged,
        "separate_bytes": separate,
        "saved_bytes": separate - merged,
        "ratio": separate / merged if merged else 0.0,
    }


# Up to this many approved heads, the builder lists them all and ticks them in the browser. Above
# it (10,000 heads on one backbone), it offers "the latest approved version of every task" as one
# tick box, counted and summed in SQL, and lists one page of heads at a time with a server search.
BUILDER_MAX_ROWS = 200
BUILDER_PAGE_SIZE = 50
# The task_id table shows this many rows of an "every task" choice, then how many more.
MAX_TASK_ID_ROWS = 20


@login_required
def assembly_builder_view(request):
    membership = current_membership(request)
    if membership is None:
        return render(request, "dashboard/no_team.html")
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
        else HeadVersion.objects.none()
    )
    totals = _approved_totals(approved) if backbone else {"num_approved": 0}
    many = totals["num_approved"] > BUILDER_MAX_ROWS
    candidates = [] if many or not backbone else heads_in_task_order(approved)
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
        context.update(_many_heads_context(request, backbone=backbone, approved=approved, totals=totals, data=data))
        return render(request, "assemblies/builder.html", context)
    if data is not None:
        selected_ids = {pk for pk in map(parse_id, data.getlist("heads")) if pk is not None}
    else:  # the latest approved version of each task, as assemblies.services.latest_approved_heads chooses
        latest = {}
        for head in candidates:  # in task order: a task's last version wins
            latest[head.task_id] = head
        selected_ids = {head.pk for head in latest.values()}
    selected = [head for head in candidates if head.pk in selected_ids]
    context.update(
        {
            "candidates": [(index, head, head.pk in selected_ids) for index, head in enumerate(candidates)],
            "selected": list(enumerate(selected)),
            "sizes": _sizes_of(backbone, selected) if backbone else None,
        }
    )
    return render(request, "assemblies/builder.html", context)


def _sizes_of(backbone: BackboneVersion, heads: list[HeadVersion]) -> dict:
    branched = [head for head in heads if head.branch_blob_id is not None]
    return size_comparison(
        backbone=backbone,
        num_heads=len(heads),
        heads_bytes=sum(head.blob.size_bytes for head in heads),
        num_branches=len(branched),
        branches_bytes=sum(head.branch_blob.size_bytes for head in branched),
    )


def _approved_totals(approved) -> dict:
    """Count the approved heads, and the latest approved version of each task, its bytes and its
    branches' bytes, in one query."""
    is_latest = Q(head_is_latest_approved())
    totals = approved.aggregate(
        num_approved=Count("pk"),
        num_latest=Count("pk", filter=is_latest),
        latest_bytes=Sum("blob__size_bytes", filter=is_latest),
        latest_num_branches=Count("branch_blob", filter=is_latest),
        latest_branches_bytes=Sum("branch_blob__size_bytes", filter=is_latest),
    )
    return {
        **totals,
        "latest_bytes": totals["latest_bytes"] or 0,
        "latest_branches_bytes": totals["latest_branches_bytes"] or 0,
    }


def _branch_groups(heads) -> list[dict]:
    """Group branched `heads` by branch point: ``[{"after_layer", "num_heads", "params", "bytes"}]`` (one query).

    The builder's "every task" choice lists its branches this way: thousands of heads branch at a
    handful of points.
    """
    after = KeyTextTransform("after_layer", "branch")
    rows = (
        heads.filter(branch_blob__isnull=False)
        .annotate(after=after)
        .values("after")
        .annotate(num_heads=Count("pk"), params=Max(Cast(KeyTextTransform("params", "branch"), BigIntegerField())))
        .annotate(bytes=Sum("branch_blob__size_bytes"))
        .order_by("after")
    )
    return [
        {"after_layer": row["after"], "num_heads": row["num_heads"], "params": row["params"], "bytes": row["bytes"]}
        for row in rows[:MAX_TASK_ID_ROWS]
    ]


def _task_order(queryset):
    """Order heads as assemblies.services.heads_in_task_order does (task slug by code point, then version).

    Slugs are lowercase ASCII, so a binary collation gives Python's order; PostgreSQL's default
    (language) collation would not (it skips hyphens).
    """
    collation = "C" if connection.vendor == "postgresql" else "BINARY"
    return queryset.order_by(Collate("task__slug", collation), "version")


def _many_heads_context(request, *, backbone: BackboneVersion, approved, totals: dict, data) -> dict:
    """The builder's context when the backbone has more approved heads than BUILDER_MAX_ROWS.

    A constant number of queries whatever the number of heads: one page of the (searched)
    approved heads and the first rows of the "every task" task_id table (the counts and byte
    sum come from _approved_totals).
    """
    search = request.GET.get("q", "").strip()
    shown = approved.filter(task__slug__icontains=search) if search else approved
    paginator = TwoStepPaginator(_task_order(shown), BUILDER_PAGE_SIZE)
    if not search:
        paginator.count = totals["num_approved"]  # known already: no second COUNT
    page = paginator.get_page(request.GET.get("page"))
    all_latest = data is None or bool(data.get("all_latest"))
    ticked = {pk for pk in map(parse_id, data.getlist("heads")) if pk is not None} if data is not None else set()
    latest_rows = list(_task_order(head_latest_approved_list(heads=approved))[:MAX_TASK_ID_ROWS])
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
        chosen = list(_task_order(approved.filter(pk__in=ticked)))
        selected = chosen[:MAX_TASK_ID_ROWS]
        sizes = _sizes_of(backbone, chosen)
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
        "latest_branches": _branch_groups(head_latest_approved_list(heads=approved))
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
    verification = assembly.verification or {}
    checks = [dict(check, passed=_relative_diff(check) <= VERIFY_ATOL) for check in verification.get("heads", [])]
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
        and _relative_diff(verification) <= VERIFY_ATOL
        and all(c["passed"] for c in checks),
        "atol": VERIFY_ATOL,
        "input_specs": _shown_inputs(assembly),
        "snippets": usage_snippets(assembly) if assembly.manifest.get("heads") else None,
        "try_form": try_form,
        "trial": trial,
    }


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


def _shape_literal(dims: list[int]) -> str:
    return f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(map(str, dims))})"


def _python_value(spec: dict, *, num_rows: int) -> str:
    """Return a Python expression for `num_rows` examples of an input."""
    shape = _shape_literal([num_rows, *example_dims(spec)])
    kind = dtype_kind(spec["dtype"])
    if kind == "string":
        rows = [example_row(spec, max_values=MAX_INLINE_VALUES, row=row) for row in range(num_rows)]
        return json.dumps(rows) if None not in rows else f'np.full({shape}, "{EXAMPLE_TEXTS[0]}")'
    if kind in ("int", "bool"):
        return f'np.random.randint(0, 2, size={shape}).astype("{spec["dtype"]}")'
    return f'np.random.standard_normal({shape}).astype("{spec["dtype"]}")'


def _json_generator(spec: dict) -> str:
    """Return a Python expression that builds one row of an input as JSON values (for large inputs)."""
    shape = _shape_literal([1, *example_dims(spec)])
    if dtype_kind(spec["dtype"]) == "string":
        return f'np.full({shape}, "{EXAMPLE_TEXTS[0]}").tolist()'
    return f'np.zeros({shape}, "{spec["dtype"]}").tolist()'


def usage_snippets(assembly: Assembly) -> dict:
    """Python and TF Serving REST examples filled in with this assembly's inputs (names, shapes, dtypes)."""
    specs = manifest_inputs(assembly.manifest)
    heads = assembly.manifest["heads"]
    example = heads[1] if len(heads) > 1 else heads[0]  # a task_id other than 0 shows that it matters
    task, task_id = example["task"], example["task_id"]
    task_ids = f"task_id=tf.constant([{task_id}, {task_id}], tf.int32)"
    by_task = f'task=tf.constant(["{task}", "{task}"])'
    if len(specs) == 1:
        call = f"    inputs=tf.constant(x), {task_ids}\n"
        inputs = f"x = {_python_value(specs[0], num_rows=2)}  # {describe_input(specs[0], with_name=False)}\n"
        single_call = "inputs=tf.constant(x)"
    else:
        lines = "".join(
            f'    "{spec["name"]}": {_python_value(spec, num_rows=2)},  # {describe_input(spec, with_name=False)}\n'
            for spec in specs
        )
        inputs = (
            "# every backbone input by name\n"
            f"x = {{\n{lines}}}\n"
            "inputs = {name: tf.constant(value) for name, value in x.items()}\n"
        )
        call = f"    **inputs, {task_ids}\n"
        single_call = "**inputs"
    python = (
        f"{PYTHON_HEADER}{inputs}\n"
        f"# serving_default: every row picks its head with task_id ({task_id} = {task})\n"
        'result = model.signatures["serving_default"](\n'
        f"{call}"
        ")\n"
        'width = int(result["output_width"][0])\n'
        f'{task.replace("-", "_")} = result["outputs"][:, :width]  # zero-padded to the widest head\n'
    )
    if "serving_by_task" in (assembly.signatures or []):
        python += (
            "\n# serving_by_task: the same, with task slugs (an unknown slug raises an error naming it)\n"
            'result = model.signatures["serving_by_task"](\n'
            f"{call.replace(task_ids, by_task)}"
            ")\n"
        )
    if assembly.task_signatures:
        python += (
            "\n# or call one task's own signature (this assembly has them)\n"
            f'outputs = model.signatures["{task}"]({single_call})["outputs"]\n'
        )
    rows = {spec["name"]: example_row(spec, max_values=MAX_INLINE_VALUES) for spec in specs}
    body = {
        "signature_name": "serving_default",
        "inputs": {**{name: [row] for name, row in rows.items()}, "task_id": [task_id]},
    }
    if None not in rows.values():
        rest = json.dumps(body)
        rest_note = ""
    else:
        for spec in specs:
            if rows[spec["name"]] is None:
                body["inputs"][spec["name"]] = f"<one {example_dims(spec)} {spec['dtype']} array per row>"
        rest = json.dumps(body, indent=2)
        values = ", ".join(f'"{spec["name"]}": {_json_generator(spec)}' for spec in specs)
        rest_note = (
            f"python -c 'import json, numpy as np; x = {{{values}}}; "
            f'print(json.dumps({{"signature_name": "serving_default", '
            f'"inputs": {{**x, "task_id": [{task_id}]}}}}))\' > body.json'
        )
    by_task_body = None
    if "serving_by_task" in (assembly.signatures or []) and None not in rows.values():
        by_task_body = json.dumps(
            {"signature_name": "serving_by_task", "inputs": {**{n: [r] for n, r in rows.items()}, "task": [task]}}
        )
    return {
        "python": python,
        "rest_body": rest,
        "rest_by_task": by_task_body,
        "rest_generator": rest_note,
        "task": task,
        "task_id": task_id,
        "inputs": specs,
    }
