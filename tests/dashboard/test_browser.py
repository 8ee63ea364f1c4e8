"""The dashboard in a real headless Chromium."""

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_login_shows_the_dashboard_with_navigation_and_team(logged_in_page, live_server):
    page = logged_in_page("dana", team="vision", role="admin")
    assert page.locator("h1").inner_text() == "vision"
    nav = page.locator("nav.nav").inner_text()
    for section in ("Backbones", "Heads", "Review queue", "Jobs", "Assemblies", "Team"):
        assert section in nav
    assert page.locator("#team-select option").first.inner_text().startswith("vision")
    page.click("nav.nav >> text=Team")
    assert "dana" in page.locator("table.table").inner_text()


def test_wrong_password_shows_an_error(page, live_server, make_member):
    make_member("dana", password="pw-Secret-123")
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", "dana")
    page.fill("#id_password", "nope")
    page.click("button[type=submit]")
    assert "Wrong username or password" in page.locator("[role=alert]").inner_text()
