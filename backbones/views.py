"""Dashboard pages for backbone versions: list, detail (layers, lineage, heads, where heads branch
off) and upload.

Thin: read through backbones.selectors, write through backbones.services, render templates.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.urls import reverse

from backbones.forms import BackboneFilterForm, BackboneUploadForm
from backbones.selectors import (
    backbone_branch_points,
    backbone_branches,
    backbone_children,
    backbone_get,
    backbone_heads,
    backbone_lineage,
    backbone_list,
)
from backbones.services import backbone_branch_points_request, backbone_upload
from core.errors import ApplicationError
from dashboard.kit import layer_stack, object_or_404, paginate, query_without_page, team_required

# The detail page shows this many of a backbone's heads and links to the paginated head list for the rest.
MAX_SHOWN_HEADS = 50


@team_required
def backbone_list_view(request, membership):
    filter_form = BackboneFilterForm(request.GET or None)
    filters = {"team": membership.team.slug}
    if filter_form.is_bound and filter_form.is_valid() and filter_form.cleaned_data["status"]:
        filters["status"] = filter_form.cleaned_data["status"]
    page = paginate(request, backbone_list(user=request.user, filters=filters))
    return render(
        request,
        "backbones/list.html",
        {"page": page, "filter_form": filter_form, "query": query_without_page(request), "membership": membership},
    )


@login_required
def backbone_detail_view(request, pk: int):
    backbone = object_or_404(backbone_get, user=request.user, pk=pk)
    lineage = backbone_lineage(backbone=backbone)
    spec = backbone.spec or {}
    heads = backbone_heads(backbone=backbone)
    possible = backbone_branch_points(backbone=backbone)
    if possible is None:
        backbone_branch_points_request(backbone=backbone)
    diagram = layer_stack(
        layers=spec.get("layers", []),
        feature_layer=spec.get("feature_layer") or backbone.feature_layer,
        points=backbone_branches(backbone=backbone),
        possible=None if possible is None else [point["layer"] for point in possible],
        more_url=reverse("heads:list") + f"?backbone={backbone.pk}",
    )
    return render(
        request,
        "backbones/detail.html",
        {
            "backbone": backbone,
            "spec": spec,
            "layers": spec.get("layers", []),
            "params": spec.get("params", {}),
            "ancestors": lineage[:-1],
            "children": backbone_children(backbone=backbone),
            "heads": heads[:MAX_SHOWN_HEADS],
            "num_heads": heads.count(),
            "diagram": diagram,
            "points_known": possible is not None,
        },
    )


@team_required
def backbone_upload_view(request, membership):
    form = BackboneUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            version, deduplicated = backbone_upload(team=membership.team, user=request.user, **form.cleaned_data)
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            if deduplicated:
                messages.info(request, f"This file is already stored as {version.label}; showing that version.")
            else:
                messages.success(request, f"Uploaded {version.label}. A worker is validating it now.")
            return redirect("backbones:detail", pk=version.pk)
    return render(request, "backbones/upload.html", {"form": form, "membership": membership})
