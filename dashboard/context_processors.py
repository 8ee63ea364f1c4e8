"""Put the user's teams and the current team (from the session) into every template."""

from django.urls import NoReverseMatch, reverse

from teams.models import Membership

SESSION_KEY = "current_team"

# (label, url name, namespace). Sections whose app is not installed yet show as disabled.
NAV = [
    ("Backbones", "backbones:list", "backbones"),
    ("Heads", "heads:list", "heads"),
    ("Review queue", "heads:review_queue", "heads"),
    ("Jobs", "training:job_list", "training"),
    ("Assemblies", "assemblies:list", "assemblies"),
]


def nav_items(request=None) -> list[dict]:
    """Return the sidebar entries, with url None for sections not available yet.

    The entry whose URL name is the current view is active; failing that, the first entry of
    the current namespace (so a head's detail page highlights "Heads", not "Review queue").
    """
    match = getattr(request, "resolver_match", None)
    view_name = match.view_name if match else ""
    namespace = match.namespace if match else ""
    exact = any(url_name == view_name for _, url_name, _ in NAV)
    items, active_found = [], False
    for label, url_name, item_namespace in NAV:
        try:
            url = reverse(url_name)
        except NoReverseMatch:
            url = None
        active = url is not None and (
            url_name == view_name if exact else (item_namespace == namespace and not active_found)
        )
        active_found = active_found or active
        items.append(
            {"label": label, "url": url, "namespace": item_namespace, "active": active, "hint": "Not available yet"}
        )
    return items


def user_memberships(request) -> list[Membership]:
    """Return the user's memberships with their teams, read once per request (views and every template)."""
    cached = getattr(request, "_modelhub_memberships", None)
    if cached is None or cached[0] != request.user.pk:
        memberships = list(Membership.objects.filter(user=request.user).select_related("team"))
        cached = request._modelhub_memberships = (request.user.pk, memberships)
    return cached[1]


def current_membership(request) -> Membership | None:
    """Return the membership of the team chosen in the session (or the user's first team)."""
    if not request.user.is_authenticated:
        return None
    memberships = user_memberships(request)
    chosen = request.session.get(SESSION_KEY)
    for membership in memberships:
        if membership.team.slug == chosen:
            return membership
    return memberships[0] if memberships else None


def current_team(request) -> dict:
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    membership = current_membership(request)
    return {
        "current_membership": membership,
        "current_team": membership.team if membership else None,
        "my_memberships": user_memberships(request),
        "nav_items": nav_items(request),
    }
