"""Dashboard pages for assemblies: list, builder (heads, task_id table, size estimate), detail
(build progress, verification, download, "try it" and usage snippets).

Thin: read through assemblies.selectors, write through assemblies.services, run trial
predictions through assemblies.predicting (a worker computes them), render templates. The web
process never imports TensorFlow.
"""

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from heads.models import HeadVersion
from heads.selectors import head_list
from modelhub.assemblies.forms import AssemblyBuildForm, TryItForm
from modelhub.assemblies.models import Assembly
from modelhub.assemblies.predicting import (
    EXAMPLE_TEXTS,
    describe_input,
    dtype_kind,
    example_dims,
    example_row,
    manifest_inputs,
    prediction_run_and_wait,
)
from modelhub.assemblies.selectors import assembly_get, assembly_list
from modelhub.assemblies.services import assembly_create, heads_in_task_order, latest_approved_heads
from modelhub.backbones.models import BackboneVersion
from modelhub.backbones.selectors import backbone_list
from modelhub.core.errors import ApplicationError
from modelhub.dashboard.context_processors import current_membership
from modelhub.dashboard.shortcuts import object_or_404, paginate

PENDING_STATUSES = (Assembly.Status.QUEUED, Assembly.Status.BUILDING, Assembly.Status.VERIFYING)
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


def size_comparison(*, backbone: BackboneVersion, heads: list[HeadVersion]) -> dict:
    """Estimate one merged model against N separate models from the stored blob sizes."""
    backbone_bytes = backbone.blob.size_bytes
    head_bytes = [head.blob.size_bytes for head in heads]
    merged = backbone_bytes + sum(head_bytes)
    separate = len(heads) * backbone_bytes + sum(head_bytes)
    return {
        "num_heads": len(heads),
        "backbone_bytes": backbone_bytes,
        "heads_bytes": sum(head_bytes),
        "merged_bytes": merged,
        "separate_bytes": separate,
        "saved_bytes": separate - merged,
        "ratio": separate / merged if merged else 0.0,
    }


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
    candidates = (
        heads_in_task_order(
            head_list(
                user=request.user,
                filters={"team": membership.team.slug, "backbone": backbone.pk, "status": HeadVersion.Status.APPROVED},
            )
        )
        if backbone
        else []
    )
    form = AssemblyBuildForm(
        data, backbones=backbones, heads=candidates, initial={"backbone": backbone.pk if backbone else None}
    )
    if data is not None and form.is_valid():
        values = form.cleaned_data
        try:
            assembly, existed = assembly_create(
                team=membership.team, user=request.user, backbone_id=values["backbone"].pk,
                head_ids=values["heads"], name=values["name"],
            )  # fmt: skip
        except ApplicationError as exc:
            messages.error(request, exc.message)
        else:
            if existed:
                messages.info(request, f"These heads on {backbone.label} are already assembled; showing that build.")
            else:
                messages.success(request, f"Assembly queued: {len(values['heads'])} heads on {backbone.label}.")
            return redirect("assemblies:detail", pk=assembly.pk)
    elif data is not None:
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, error)
    if data is not None:
        selected_ids = {int(pk) for pk in data.getlist("heads") if pk.isdigit()}
    else:
        selected_ids = {head.pk for head in latest_approved_heads(backbone=backbone)} if backbone else set()
    selected = [head for head in candidates if head.pk in selected_ids]
    return render(
        request,
        "assemblies/builder.html",
        {
            "membership": membership,
            "form": form,
            "backbone": backbone,
            "has_backbones": backbones.exists(),
            "candidates": [(index, head, head.pk in selected_ids) for index, head in enumerate(candidates)],
            "selected": list(enumerate(selected)),
            "sizes": size_comparison(backbone=backbone, heads=selected) if backbone else None,
        },
    )


def _chosen_backbone(backbones, raw_id) -> BackboneVersion | None:
    """Return the backbone named by `raw_id` among `backbones`, else the newest one."""
    if raw_id and str(raw_id).isdigit():
        chosen = backbones.filter(pk=int(raw_id)).first()
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
                assembly=assembly, user=request.user, task=None, task_id=values["task_id"], inputs=values["inputs"]
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            if prediction.status == prediction.Status.SUCCEEDED:
                trial = _trial_result(assembly, task_id=prediction.task_id, outputs=prediction.outputs)
            else:
                form.add_error(None, f"The prediction failed in the worker: {prediction.error}")
    return render(request, "assemblies/detail.html", _detail_context(assembly, try_form=form, trial=trial))


def _can_try(assembly: Assembly) -> bool:
    return assembly.status == Assembly.Status.READY and bool(assembly.manifest.get("heads"))


def _detail_context(assembly: Assembly, *, try_form: TryItForm | None, trial: dict | None = None) -> dict:
    entries = list(assembly.entries.select_related("head", "head__task", "head__blob"))
    verification = assembly.verification or {}
    checks = [dict(check, passed=_relative_diff(check) <= VERIFY_ATOL) for check in verification.get("heads", [])]
    overall = verification.get("max_abs_diff")
    return {
        "assembly": assembly,
        "entries": entries,
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
        f'{task.replace("-", "_")} = result["outputs"][:, :width]  # zero-padded to the widest head\n\n'
        "# or call one task's own signature\n"
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
    return {
        "python": python,
        "rest_body": rest,
        "rest_generator": rest_note,
        "task": task,
        "task_id": task_id,
        "inputs": specs,
    }
