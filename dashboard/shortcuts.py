"""Helpers shared by the dashboard views of the domain apps (apps import them through dashboard.kit)."""

import functools
from collections.abc import Callable
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.paginator import Page
from django.http import Http404
from django.shortcuts import render

from core.errors import NotFoundError
from core.ids import parse_id  # noqa: F401 - re-exported by dashboard.kit
from core.pagination import TwoStepPaginator
from dashboard.context_processors import current_membership

PAGE_SIZE = 50


def object_or_404(selector: Callable[..., Any], **kwargs) -> Any:
    """Call a team-scoped selector; turn its NotFoundError into Http404 (other teams' objects)."""
    try:
        return selector(**kwargs)
    except NotFoundError as exc:
        raise Http404(exc.message) from None


def paginate(request, queryset, *, per_page: int = PAGE_SIZE) -> Page:
    """Return the page of `queryset` named by the `page` query parameter."""
    return TwoStepPaginator(queryset, per_page).get_page(request.GET.get("page"))


def query_without_page(request) -> str:
    """Return the current query string minus `page`, for pagination links that keep filters."""
    params = request.GET.copy()
    params.pop("page", None)
    return params.urlencode()


def team_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Make a view of the current team: login required, the "no team" page for a user without one.

    The view is called as ``view(request, membership, **kwargs)`` with the membership of the team
    chosen in the session (dashboard.context_processors.current_membership).

    Example:
        @team_required
        def head_list_view(request, membership): ...
    """

    @functools.wraps(view)
    def with_membership(request, *args, **kwargs):
        membership = current_membership(request)
        if membership is None:
            return render(request, "dashboard/no_team.html")
        return view(request, membership, *args, **kwargs)

    return login_required(with_membership)
