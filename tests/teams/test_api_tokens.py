"""Named API tokens: list, create and revoke your own through the API and the dashboard; expired and
revoked tokens get a 401 that says so; last_used_at is written at most once a minute."""

from datetime import datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from teams.models import ApiToken

pytestmark = pytest.mark.django_db

PASSWORD = "pw-Secret-123"


@pytest.fixture(autouse=True)
def fast_hashes(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def with_key(key: str) -> APIClient:
    return APIClient(HTTP_AUTHORIZATION=f"Token {key}")


def test_create_list_use_and_revoke_through_the_api(api_client_for):
    ana = api_client_for("ana")
    created = ana.post("/api/tokens/", {"name": "ci", "expires_in_days": 7}, format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    key = body["key"]
    assert key.startswith("mh_") and body["prefix"] == key[:8] and body["status"] == "active"
    expires = datetime.fromisoformat(body["expires_at"])
    assert timedelta(days=6, hours=23) < expires - timezone.now() <= timedelta(days=7)
    assert with_key(key).get("/api/teams/").status_code == 200

    listing = ana.get("/api/tokens/").json()
    assert set(listing) >= {"count", "next", "previous", "results"}
    assert listing["count"] == 2  # api_client_for's token and "ci"
    assert key not in str(listing)
    ci = next(row for row in listing["results"] if row["name"] == "ci")
    assert "key" not in ci and ci["prefix"] == key[:8] and ci["last_used_at"] is not None

    assert ana.delete(f"/api/tokens/{ci['id']}/").status_code == 204
    refused = with_key(key).get("/api/teams/")
    assert refused.status_code == 401
    message = refused.json()["error"]["message"]
    assert "'ci'" in message and "was revoked" in message and "/account/tokens/" in message
    assert next(row for row in ana.get("/api/tokens/").json()["results"] if row["id"] == ci["id"])["status"] == (
        "revoked"
    )
    assert ana.delete(f"/api/tokens/{ci['id']}/").status_code == 204  # revoking twice is harmless


def test_a_token_without_expiry_never_expires(api_client_for):
    body = api_client_for("ana").post("/api/tokens/", {"name": "laptop"}, format="json").json()
    assert body["expires_at"] is None


@pytest.mark.parametrize(
    "payload", [{}, {"name": ""}, {"name": "   "}, {"name": "x", "expires_in_days": 0}, {"name": "x" * 101}]
)
def test_bad_input_is_refused_and_nothing_is_stored(api_client_for, payload):
    ana = api_client_for("ana")
    before = ApiToken.objects.count()
    response = ana.post("/api/tokens/", payload, format="json")
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"code", "message", "detail"}
    assert ApiToken.objects.count() == before


def test_another_users_token_is_404(api_client_for):
    ana, bob = api_client_for("ana"), api_client_for("bob", team="audio")
    mine = ana.post("/api/tokens/", {"name": "ci"}, format="json").json()
    response = bob.delete(f"/api/tokens/{mine['id']}/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "token_not_found"
    assert ApiToken.objects.get(pk=mine["id"]).revoked_at is None
    assert mine["id"] not in [row["id"] for row in bob.get("/api/tokens/").json()["results"]]


def test_an_expired_token_gets_401_saying_so(make_member):
    _, key = make_member("ana")
    ApiToken.objects.filter(key_hash=ApiToken.hash_key(key)).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = with_key(key).get("/api/teams/")
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "not_authenticated"
    assert "expired on" in error["message"] and "POST /api/auth/token/" in error["message"]


def test_last_used_at_is_written_at_most_once_a_minute(make_member):
    _, key = make_member("ana")
    token = ApiToken.objects.get(key_hash=ApiToken.hash_key(key))
    assert token.last_used_at is None
    with_key(key).get("/api/teams/")
    token.refresh_from_db()
    first = token.last_used_at
    assert first is not None and timezone.now() - first < timedelta(seconds=30)

    with CaptureQueriesContext(connection) as queries:
        assert with_key(key).get("/api/teams/").status_code == 200
    assert not [query for query in queries if query["sql"].startswith("UPDATE")]
    token.refresh_from_db()
    assert token.last_used_at == first

    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first - timedelta(minutes=2))
    with_key(key).get("/api/teams/")
    token.refresh_from_db()
    assert token.last_used_at >= first


def test_password_exchange_makes_a_named_expiring_token(settings, make_member):
    make_member("ana", password=PASSWORD)
    response = APIClient().post("/api/auth/token/", {"username": "ana", "password": PASSWORD})
    assert response.status_code == 200
    token = ApiToken.objects.get(key_hash=ApiToken.hash_key(response.json()["token"]))
    assert token.name == "password exchange"
    assert timedelta(days=29, hours=23) < token.expires_at - timezone.now() <= timedelta(days=30)
    settings.MODELHUB_EXCHANGED_TOKEN_DAYS = 0
    response = APIClient().post("/api/auth/token/", {"username": "ana", "password": PASSWORD})
    assert response.json()["expires_at"] is None


# --- The dashboard page -------------------------------------------------------------------------


@pytest.fixture
def dana_client(client, make_member):
    user, _ = make_member("dana", password=PASSWORD)
    client.force_login(user)
    client.user = user
    return client


def test_the_dashboard_creates_shows_the_key_once_and_revokes(dana_client):
    home = dana_client.get("/").content.decode()
    assert 'href="/account/tokens/"' in home

    created = dana_client.post("/account/tokens/", {"name": "laptop", "expires_in_days": "30"})
    assert created.status_code == 200
    assert "no-store" in created["Cache-Control"]
    token = ApiToken.objects.get(user=dana_client.user, name="laptop")
    page = created.content.decode()
    key = page.split('id="new-token-key" value="')[1].split('"')[0]
    assert ApiToken.hash_key(key) == token.key_hash
    assert "will not be shown again" in page

    listing = dana_client.get("/account/tokens/").content.decode()
    assert key not in listing and token.prefix in listing and "laptop" in listing

    revoked = dana_client.post(f"/account/tokens/{token.pk}/revoke/")
    assert revoked.status_code == 302 and revoked["Location"] == "/account/tokens/"
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert with_key(key).get("/api/teams/").status_code == 401


def test_the_dashboard_refuses_bad_input_and_other_users_tokens(dana_client, make_member):
    response = dana_client.post("/account/tokens/", {"name": "x", "expires_in_days": "0"})
    assert response.status_code == 200 and 'id="new-token-key"' not in response.content.decode()
    assert not ApiToken.objects.filter(name="x").exists()
    other, _ = make_member("erin", team="audio")
    theirs = ApiToken.objects.filter(user=other).first()
    assert dana_client.post(f"/account/tokens/{theirs.pk}/revoke/").status_code == 404
    assert dana_client.get(f"/account/tokens/{theirs.pk}/revoke/").status_code == 405
    theirs.refresh_from_db()
    assert theirs.revoked_at is None
    assert theirs.prefix not in dana_client.get("/account/tokens/").content.decode()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_tokens_page_in_chromium(logged_in_page, live_server):
    page = logged_in_page("dana")
    page.click(".sidebar-foot >> text=API tokens")
    page.wait_for_url(f"{live_server.url}/account/tokens/")
    page.fill("#id_name", "ci-runner")
    page.fill("#id_expires_in_days", "7")
    page.click("form.form button[type=submit]")
    key = page.input_value("#new-token-key")
    assert key.startswith("mh_")
    assert "will not be shown again" in page.locator("#new-token").inner_text()
    assert with_key(key).get("/api/teams/").status_code == 200

    page.goto(f"{live_server.url}/account/tokens/")
    assert page.locator("#new-token").count() == 0
    row = page.locator("#token-table tr", has_text="ci-runner")
    assert key[:8] in row.inner_text() and "active" in row.inner_text()
    page.once("dialog", lambda dialog: dialog.accept())
    row.locator("button", has_text="Revoke").click()
    page.wait_for_selector(".flash-success")
    assert "revoked" in page.locator("#token-table tr", has_text="ci-runner").inner_text()
    assert with_key(key).get("/api/teams/").status_code == 401


def test_staff_see_and_revoke_tokens_in_the_admin_but_never_keys(admin_client, make_member):
    user, key = make_member("ana")
    token = ApiToken.objects.get(user=user)
    page = admin_client.get("/admin/teams/apitoken/").content.decode()
    assert token.prefix in page and key not in page and token.key_hash not in page
    assert admin_client.get("/admin/teams/apitoken/add/").status_code == 403
    detail = admin_client.get(f"/admin/teams/apitoken/{token.pk}/change/").content.decode()
    assert token.key_hash not in detail
    response = admin_client.post(
        "/admin/teams/apitoken/", {"action": "revoke_selected", "_selected_action": [token.pk]}
    )
    assert response.status_code == 302
    assert with_key(key).get("/api/teams/").status_code == 401


# --- A token never mints a token that outlives it (issue 20, item 6) ---------------------------------


def exchanged_key(make_member, username: str = "ana") -> str:
    make_member(username, password=PASSWORD)
    response = APIClient().post("/api/auth/token/", {"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.json()
    return response.json()["token"]


def test_an_expiring_token_caps_the_expiry_of_the_tokens_it_makes(make_member):
    parent_key = exchanged_key(make_member)
    parent = ApiToken.objects.get(key_hash=ApiToken.hash_key(parent_key))
    assert parent.expires_at is not None and parent.parent is None  # password exchange: no parent

    forever = with_key(parent_key).post("/api/tokens/", {"name": "forever"}, format="json")
    assert forever.status_code == 201, forever.json()
    assert datetime.fromisoformat(forever.json()["expires_at"]) == parent.expires_at
    longer = with_key(parent_key).post("/api/tokens/", {"name": "longer", "expires_in_days": 3650}, format="json")
    assert datetime.fromisoformat(longer.json()["expires_at"]) == parent.expires_at
    shorter = with_key(parent_key).post("/api/tokens/", {"name": "shorter", "expires_in_days": 2}, format="json")
    assert datetime.fromisoformat(shorter.json()["expires_at"]) < parent.expires_at

    # The grandchild of a capped child is capped too.
    grandchild = with_key(forever.json()["key"]).post("/api/tokens/", {"name": "grandchild"}, format="json")
    assert datetime.fromisoformat(grandchild.json()["expires_at"]) == parent.expires_at
    assert ApiToken.objects.get(pk=grandchild.json()["id"]).parent_id == forever.json()["id"]

    # Once the parent has expired, neither it nor its children work.
    ApiToken.objects.filter(user=parent.user).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert with_key(forever.json()["key"]).get("/api/teams/").status_code == 401


def test_a_non_expiring_token_makes_tokens_as_asked(api_client_for):
    ana = api_client_for("ana")  # its token never expires
    month = ana.post("/api/tokens/", {"name": "month", "expires_in_days": 30}, format="json").json()
    assert timedelta(days=29, hours=23) < datetime.fromisoformat(month["expires_at"]) - timezone.now()
    assert ana.post("/api/tokens/", {"name": "forever"}, format="json").json()["expires_at"] is None


def test_revoking_a_token_revokes_every_token_it_made(make_member):
    parent_key = exchanged_key(make_member)
    child = with_key(parent_key).post("/api/tokens/", {"name": "child"}, format="json").json()
    grandchild = with_key(child["key"]).post("/api/tokens/", {"name": "grandchild"}, format="json").json()
    sibling_user_key = exchanged_key(make_member, "ben")
    parent = ApiToken.objects.get(key_hash=ApiToken.hash_key(parent_key))
    # An unrelated token of the same user, made by another exchange, is left alone.
    other_key = APIClient().post("/api/auth/token/", {"username": "ana", "password": PASSWORD}).json()["token"]

    assert with_key(parent_key).delete(f"/api/tokens/{parent.pk}/").status_code == 204
    for key in (parent_key, child["key"], grandchild["key"]):
        refused = with_key(key).get("/api/teams/")
        assert refused.status_code == 401 and "was revoked" in refused.json()["error"]["message"]
    assert with_key(other_key).get("/api/teams/").status_code == 200
    assert with_key(sibling_user_key).get("/api/teams/").status_code == 200
    statuses = dict(ApiToken.objects.filter(user=parent.user).values_list("name", "revoked_at"))
    assert statuses["child"] is not None and statuses["grandchild"] is not None


def test_revoking_a_child_leaves_its_parent_working(make_member):
    parent_key = exchanged_key(make_member)
    child = with_key(parent_key).post("/api/tokens/", {"name": "child"}, format="json").json()
    assert with_key(parent_key).delete(f"/api/tokens/{child['id']}/").status_code == 204
    assert with_key(child["key"]).get("/api/teams/").status_code == 401
    assert with_key(parent_key).get("/api/teams/").status_code == 200


def test_the_admin_revoke_action_revokes_the_children_too(admin_client, make_member):
    parent_key = exchanged_key(make_member)
    child = with_key(parent_key).post("/api/tokens/", {"name": "child"}, format="json").json()
    parent = ApiToken.objects.get(key_hash=ApiToken.hash_key(parent_key))
    response = admin_client.post(
        "/admin/teams/apitoken/", {"action": "revoke_selected", "_selected_action": [parent.pk]}
    )
    assert response.status_code == 302
    assert with_key(child["key"]).get("/api/teams/").status_code == 401


def test_tokens_made_from_a_session_keep_their_asked_expiry(dana_client):
    response = dana_client.post("/api/tokens/", {"name": "from the dashboard"}, content_type="application/json")
    assert response.status_code == 201, response.json()
    assert response.json()["expires_at"] is None
    assert ApiToken.objects.get(pk=response.json()["id"]).parent is None
