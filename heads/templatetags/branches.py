"""The head page's branch card: what a head version owns of its backbone (issue 10), no query."""

from django import template

from heads.selectors import head_branch

register = template.Library()


@register.inclusion_tag("heads/_branch.html")
def branch_card(head) -> dict:
    """Render "Branches after <layer>: k layers, n params" and the owned layers, for a branched head."""
    return {"head": head, "branch": head_branch(head=head)}
