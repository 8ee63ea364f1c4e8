"""Dashboard shell: team switcher, the team page (members and roles) and the account's API tokens."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from core.errors import ApplicationError
from dashboard.context_processors import SESSION_KEY
from dashboard.forms import ApiTokenForm
from dashboard.shortcuts import object_or_404, paginate, team_required
from teams.models import Membership
from teams.selectors import api_token_get, api_token_list, membership_get, membership_require_role
from teams.services import api_token_create, api_token_revoke, membership_set


@login_required
@require_POST
def team_switch(request):
    slug = request.POST.get("team", "")
    try:
        membership_get(user=request.user, team_slug=slug)
    except ApplicationError:
        raise Http404("No such team.") from None
    request.session[SESSION_KEY] = slug
    target = request.POST.get("next") or ""
    allowed = {request.get_host()}
    if not url_has_allowed_host_and_scheme(target, allowed_hosts=allowed, require_https=request.is_secure()):
        target = "overview:home"  # never redirect off the site (open redirect)
    return redirect(target)


@team_required
def team(request, membership):
    if request.method == "POST":
        try:
            membership_require_role(user=request.user, team=membership.team, role=Membership.Role.ADMIN)
            user = User.objects.filter(username=request.POST.get("username", "")).first()
            if user is None:
                raise ApplicationError(f"No user named {request.POST.get('username')!r}.")
            membership_set(user=user, team=membership.team, role=request.POST.get("role", ""))
            messages.success(request, f"{user.username} is now {request.POST.get('role')}.")
        except ApplicationError as exc:
            messages.error(request, exc.message)
        return redirect("dashboard:team")
    members = membership.team.memberships.select_related("user").order_by("user__username")
    return render(
        request, "dashboard/team.html", {"membership": membership, "members": members, "roles": Membership.Role.choices}
    )


@login_required
@never_cache  # the page that shows a new key must not be kept by any cache
def api_tokens(request):
    """List the user's API tokens; POST creates one and shows its key on this response only."""
    form = ApiTokenForm(request.POST if request.method == "POST" else None)
    new_token, new_key = None, None
    if request.method == "POST" and form.is_valid():
        try:
            new_token, new_key = api_token_create(
                user=request.user,
                name=form.cleaned_data["name"],
                expires_in_days=form.cleaned_data["expires_in_days"],
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            form = ApiTokenForm()
    # The key is rendered into this response and stored nowhere (no redirect through the session).
    context = {"form": form, "page": paginate(request, api_token_list(user=request.user))}
    return render(request, "account/tokens.html", {**context, "new_token": new_token, "new_key": new_key})


@login_required
@require_POST
def api_token_revoke_view(request, pk: int):
    token = object_or_404(api_token_get, user=request.user, pk=pk)
    api_token_revoke(token=token)
    messages.success(request, f"Revoked '{token.name}' ({token.prefix}...): requests with it now get 401.")
    return redirect("dashboard:api_tokens")
