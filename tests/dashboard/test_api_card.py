"""The overview's "Use the API" card shows the `modelhub` CLI next to curl, for this server and team."""

import pytest
from django.test import Client


@pytest.mark.django_db
def test_the_api_card_shows_curl_and_the_cli_for_this_server_and_team(make_member):
    user, _ = make_member("dana", team="vision")
    browser = Client()
    browser.force_login(user)
    html = browser.get("/").content.decode()
    assert "curl -s -X POST http://testserver/api/auth/token/" in html
    assert "pip install ./client" in html
    assert "modelhub login http://testserver --username dana" in html
    assert "modelhub import ./models --team vision --backbone-name NAME --wait" in html
