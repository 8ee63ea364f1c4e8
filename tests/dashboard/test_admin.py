"""Django admin is enabled and lists ModelHub's models for staff."""

import pytest

pytestmark = pytest.mark.django_db


def test_admin_lists_modelhub_models(admin_client):
    page = admin_client.get("/admin/").content.decode()
    for name in ("Teams", "Blobs", "Backbone versions", "Head versions", "Model imports"):
        assert name in page
    for url in ("/admin/teams/team/", "/admin/backbones/backboneversion/", "/admin/heads/headversion/"):
        assert admin_client.get(url).status_code == 200


def test_admin_is_closed_to_anonymous_users(client):
    assert client.get("/admin/").status_code == 302
