"""The dashboard's home: the Overview of the current team's work, with system health and the API card.

Thin: the team comes from the session (dashboard.kit.current_membership), the content from
overview.selectors.team_overview. A user without a team sees how to get one and the API card.
"""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from dashboard.kit import current_membership
from overview.selectors import team_overview


@login_required
def home(request):
    membership = current_membership(request)
    overview = team_overview(user=request.user, membership=membership) if membership else None
    return render(request, "overview/home.html", {"membership": membership, "overview": overview})
