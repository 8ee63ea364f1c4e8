"""Alias badges, the move-alias control and a task's alias list for the heads pages (one query each)."""

from django import template
from django.utils.html import format_html_join

from heads.selectors import head_version_authors
from releases.selectors import alias_list_for_task, alias_names_by_head
from teams.selectors import membership_get

register = template.Library()


@register.simple_tag
def aliases_by_head(heads) -> dict[int, list[str]]:
    """Return {head version id: alias names} for a page of head versions (one query)."""
    return alias_names_by_head(head_ids=[head.pk for head in heads])


@register.simple_tag
def alias_badges(names_by_head: dict, head) -> str:
    """Render a badge per alias pointing at `head`."""
    names = names_by_head.get(head.pk, [])
    return format_html_join(" ", '<span class="pill pill-alias" title="alias">@{}</span>', ((name,) for name in names))


@register.inclusion_tag("releases/_alias_panel.html", takes_context=True)
def alias_panel(context, head) -> dict:
    """The aliases of the head's task, and the control to move one here (reviewers who did not author it)."""
    user = context["request"].user
    membership = membership_get(user=user, team_slug=head.task.team.slug)
    aliases = list(alias_list_for_task(task=head.task))
    reason = ""
    if not membership.can_review:
        reason = "Only reviewers and admins move aliases."
    elif head.created_by_id == user.pk:
        reason = "You authored this version, so another reviewer must point an alias at it."
    elif head.status == "approved" and user.pk in head_version_authors(head=head):
        authorship = "; you ".join(head_version_authors(head=head)[user.pk])
        reason = f"You {authorship}, so another reviewer must point an alias at it."
    elif head.status != "approved":
        reason = "Only approved versions can be aliased."
    return {
        "head": head,
        "aliases": aliases,
        "here": [alias.name for alias in aliases if alias.head_id == head.pk],
        "can_move": not reason,
        "reason": reason,
        "csrf_token": context.get("csrf_token"),
    }
