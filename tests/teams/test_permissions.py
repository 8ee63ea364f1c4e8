"""Teams, roles and tokens: non-members get 404, roles gate actions, credentials are checked."""

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from teams.models import Membership

pytestmark = pytest.mark.django_db


def test_token_endpoint_returns_a_working_token(make_member):
    make_member("erin", password="pw-Secret-123")
    response = APIClient().post("/api/auth/token/", {"username": "erin", "password": "pw-Secret-123"})
    assert response.status_code == 200
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    teams = client.get("/api/teams/").json()["results"]
    assert teams == [{"slug": "vision", "name": "vision", "role": "member"}]


def test_wrong_credentials_get_401_with_a_message(make_member):
    make_member("erin")
    response = APIClient().post("/api/auth/token/", {"username": "erin", "password": "wrong"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_credentials"
    assert "Wrong username or password" in response.json()["error"]["message"]


def test_missing_and_bad_tokens_get_401_in_the_error_envelope():
    for client in (APIClient(), APIClient(HTTP_AUTHORIZATION="Token nope")):
        response = client.get("/api/teams/")
        assert response.status_code == 401
        assert set(response.json()["error"]) == {"code", "message", "detail"}


def test_non_member_gets_404_not_403(api_client_for):
    api_client_for("owner", team="vision", role="admin")
    outsider = api_client_for("mallory", team="audio", role="admin")
    response = outsider.get("/api/teams/vision/members/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "team_not_found"
    # Same answer as for a team that does not exist: existence does not leak.
    missing = outsider.get("/api/teams/does-not-exist/members/")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "team_not_found")


def test_only_admins_manage_membership(api_client_for, make_member):
    member = api_client_for("mia", role="member")
    reviewer = api_client_for("rob", role="reviewer")
    admin = api_client_for("ada", role="admin")
    make_member("newbie", team="other")
    for client in (member, reviewer):
        response = client.post("/api/teams/vision/members/", {"username": "newbie", "role": "member"})
        assert response.status_code == 403
        assert "needs the 'admin' role" in response.json()["error"]["message"]
    assert not Membership.objects.filter(user__username="newbie", team__slug="vision").exists()
    response = admin.post("/api/teams/vision/members/", {"username": "newbie", "role": "reviewer"})
    assert response.status_code == 201, response.json()
    assert Membership.objects.get(user__username="newbie", team__slug="vision").role == "reviewer"


def test_create_user_command_is_idempotent_and_prints_a_new_token_last(capsys):
    call_command("create_user", "ci-bot", "--team", "ml-ops", "--role", "member", "--print-token")
    first = capsys.readouterr().out.strip().splitlines()
    call_command("create_user", "ci-bot", "--team", "ml-ops", "--role", "reviewer", "--print-token")
    second = capsys.readouterr().out.strip().splitlines()
    # Keys are stored hashed: each run prints a new one; both work until revoked.
    assert first[-1] != second[-1] and first[-1].startswith("mh_") and len(second[-1]) == 46
    assert Membership.objects.filter(user__username="ci-bot").count() == 1
    assert Membership.objects.get(user__username="ci-bot", team__slug="ml-ops").role == "reviewer"
    for key in (first[-1], second[-1]):
        client = APIClient(HTTP_AUTHORIZATION=f"Token {key}")
        assert client.get("/api/teams/").json()["results"][0]["slug"] == "ml-ops"


def test_unknown_api_path_uses_the_error_envelope(api_client_for):
    response = api_client_for("u1").get("/api/definitely-not-here/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_openapi_schema_and_swagger_ui_work_offline(client):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200 and b"/api/auth/token/" in schema.content
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.content and b"cdn" not in docs.content.lower()
