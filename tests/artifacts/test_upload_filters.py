"""GET /api/uploads/?team=T&sha256=H: does the team have these bytes already (the client skips them)."""

import hashlib

import pytest


def stage(client, tmp_path, name: str, data: bytes, *, team: str = "vision") -> dict:
    path = tmp_path / name
    path.write_bytes(data)
    with open(path, "rb") as handle:
        response = client.post("/api/uploads/", {"team": team, "file": handle}, format="multipart")
    assert response.status_code == 201, response.json()
    return response.json()


@pytest.mark.django_db
def test_uploads_filter_by_team_and_sha256(api_client_for, tmp_path):
    from teams.services import user_create_in_team

    ana = api_client_for("ana")
    user_create_in_team(username="ana", team_slug="audio", role="member")
    first = stage(ana, tmp_path, "a.keras", b"first")
    stage(ana, tmp_path, "b.keras", b"second")
    in_audio = stage(ana, tmp_path, "a-audio.keras", b"first", team="audio")

    digest = hashlib.sha256(b"first").hexdigest()
    found = ana.get("/api/uploads/", {"team": "vision", "sha256": digest}).json()
    assert [row["id"] for row in found["results"]] == [first["id"]]
    upper = ana.get("/api/uploads/", {"team": "vision", "sha256": digest.upper()}).json()
    assert [row["id"] for row in upper["results"]] == [first["id"]]
    both_teams = ana.get("/api/uploads/", {"sha256": digest}).json()
    assert {row["id"] for row in both_teams["results"]} == {first["id"], in_audio["id"]}
    assert ana.get("/api/uploads/", {"team": "vision"}).json()["count"] == 2
    missing = ana.get("/api/uploads/", {"team": "vision", "sha256": hashlib.sha256(b"x").hexdigest()}).json()
    assert missing["count"] == 0


@pytest.mark.django_db
def test_uploads_filter_never_shows_another_teams_bytes(api_client_for, tmp_path):
    ana, otto = api_client_for("ana"), api_client_for("otto", team="audio")
    stage(otto, tmp_path, "secret.keras", b"secret", team="audio")
    digest = hashlib.sha256(b"secret").hexdigest()
    assert ana.get("/api/uploads/", {"sha256": digest}).json()["count"] == 0
    assert ana.get("/api/uploads/", {"team": "audio", "sha256": digest}).json()["count"] == 0


@pytest.mark.django_db
def test_a_malformed_sha256_is_a_400_in_the_error_envelope(api_client_for):
    response = api_client_for("ana").get("/api/uploads/", {"sha256": "not-a-digest"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid" and "sha256" in error["detail"]
