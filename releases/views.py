"""Dashboard pages of the release workflow: move an alias from the review panel, a task's aliases
and their history, and the team's webhooks with their deliveries."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from core.errors import ApplicationError
from core.events import EVENTS
from dashboard.kit import object_or_404, paginate, team_required
from heads.selectors import head_get
from releases.selectors import (
    alias_get,
    alias_list_for_task,
    alias_moves_for_task,
    delivery_list,
    webhook_get,
    webhook_list,
)
from releases.services import alias_delete, alias_set, webhook_create, webhook_delete, webhook_test


@login_required
@require_POST
def alias_move_view(request, pk: int):
    """Set or move an alias onto head version `pk` (the review panel's control)."""
    head = object_or_404(head_get, user=request.user, pk=pk)
    name = request.POST.get("name", "").strip()
    try:
        alias, changed = alias_set(
            user=request.user,
            team=head.task.team,
            task_slug=head.task.slug,
            name=name,
            head_id=head.pk,
            comment=request.POST.get("comment", ""),
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        target = f"{head.task.slug} v{head.version}"
        messages.success(
            request,
            f"Alias '{alias.name}' now points to {target}."
            if changed
            else f"Alias '{alias.name}' already pointed to {target}.",
        )
    return redirect("heads:detail", pk=head.pk)


@team_required
def task_aliases_view(request, membership, slug: str):
    """A task's current aliases and the history of every alias of it."""
    task = membership.team.tasks.filter(slug=slug).first()
    if task is None:
        raise Http404(f"Task '{slug}' was not found in team '{membership.team.slug}'.")
    return render(
        request,
        "releases/task_aliases.html",
        {
            "membership": membership,
            "task": task,
            "aliases": alias_list_for_task(task=task),
            "moves": paginate(request, alias_moves_for_task(task=task)),
        },
    )


@login_required
@require_POST
def alias_delete_view(request, pk: int):
    alias = object_or_404(alias_get, user=request.user, pk=pk)
    try:
        alias_delete(user=request.user, alias=alias, comment=request.POST.get("comment", ""))
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Alias '{alias.name}' of {alias.task.slug} deleted.")
    return redirect("releases:task_aliases", slug=alias.task.slug)


@team_required
def webhooks_view(request, membership):
    """The team's webhooks (reviewers and admins): list and create; the secret is shown once."""
    context = {"membership": membership, "events": EVENTS, "webhooks": [], "created": None}
    if request.method == "POST":
        try:
            webhook, secret = webhook_create(
                user=request.user,
                team=membership.team,
                url=request.POST.get("url", "").strip(),
                events=request.POST.getlist("events"),
                secret=request.POST.get("secret", ""),
            )
        except ApplicationError as exc:
            messages.error(request, exc.message)
            context["form"] = {"url": request.POST.get("url", ""), "events": request.POST.getlist("events")}
        else:
            context["created"] = {"webhook": webhook, "secret": secret}
    if membership.can_review:
        context["webhooks"] = webhook_list(user=request.user, team=membership.team)
    return render(request, "releases/webhooks.html", context)


@login_required
def webhook_detail_view(request, pk: int):
    """One webhook: its delivery log, send a test event, delete it."""
    try:
        webhook = webhook_get(user=request.user, pk=pk)
    except ApplicationError as exc:
        raise Http404(exc.message) from None
    if request.method == "POST":
        action = request.POST.get("action")
        try:
            if action == "test":
                webhook_test(user=request.user, webhook=webhook)
                messages.success(request, "Test event queued: a worker delivers it; this log shows the result.")
            elif action == "delete":
                webhook_delete(user=request.user, webhook=webhook)
                messages.success(request, f"Webhook to {webhook.url} deleted.")
                return redirect("releases:webhooks")
        except ApplicationError as exc:
            messages.error(request, exc.message)
        return redirect(reverse("releases:webhook_detail", kwargs={"pk": webhook.pk}))
    return render(
        request,
        "releases/webhook_detail.html",
        {"webhook": webhook, "deliveries": paginate(request, delivery_list(webhook=webhook))},
    )
