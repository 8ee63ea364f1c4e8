"""The release workflow in the dashboard: alias badges, the move-alias control (headless Chromium),
a task's alias history, and the team's webhooks page."""

import re

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from heads.models import HeadVersion
from tests.view_helpers import backbone_row, head_row

APPROVED = HeadVersion.Status.APPROVED


def _two_approved_versions(make_member):
    """Two approved versions of 'sentiment' authored by 'ava'."""
    ava, _ = make_member("ava", role="reviewer")
    backbone = backbone_row(ava)
    return head_row(ava, backbone, status=APPROVED), head_row(ava, backbone, status=APPROVED, description="v2")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_reviewer_moves_an_alias_from_the_review_panel(logged_in_page, live_server, make_member):
    first, second = _two_approved_versions(make_member)
    page = logged_in_page("dana", team="vision", role="admin")
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("dialog", lambda dialog: dialog.accept())

    page.goto(f"{live_server.url}/heads/{first.pk}/")
    page.fill("#alias-name", "champion")
    page.fill("#alias-comment", "best so far")
    page.click("#btn-move-alias")
    page.wait_for_url(re.compile(rf"/heads/{first.pk}/$"))
    expect(page.locator(".flash-success")).to_contain_text("Alias 'champion' now points to sentiment v1")
    expect(page.locator("#alias-badges")).to_have_text("@champion")

    page.goto(f"{live_server.url}/heads/{second.pk}/")
    expect(page.locator("#task-aliases")).to_contain_text("@champion → v1")
    page.fill("#alias-name", "champion")
    page.click("#btn-move-alias")
    expect(page.locator(".flash-success")).to_contain_text("now points to sentiment v2")
    expect(page.locator("#alias-badges")).to_have_text("@champion")

    # Archiving the aliased version is refused, naming the alias.
    page.click("#btn-archive")
    expect(page.locator(".messages .flash-error")).to_contain_text("sentiment v2 (head version")
    expect(page.locator(".messages .flash-error")).to_contain_text("alias 'champion'")
    expect(page.locator("#status-badge")).to_have_text("approved")

    page.click("#alias-history-link")
    page.wait_for_url(re.compile(r"/heads/tasks/sentiment/aliases/$"))
    rows = [" ".join(text.split()) for text in page.locator("#alias-history tbody tr").all_inner_texts()]
    assert [row.split(" ", 2)[2] for row in rows] == [
        "@champion Moved v1 v2 dana",
        "@champion Set — v1 dana best so far",
    ]
    page.goto(f"{live_server.url}/heads/?task=sentiment")
    expect(page.locator("#head-table")).to_contain_text("@champion")

    # The same reviewer then compares the two versions and opens the backbone's lineage graph.
    page.goto(f"{live_server.url}/heads/{second.pk}/")
    page.select_option("#compare-picker select[name=a]", str(first.pk))
    page.select_option("#compare-picker select[name=b]", str(second.pk))
    page.click("#compare-picker button[type=submit]")
    page.wait_for_url(re.compile(rf"/heads/compare/\?a={first.pk}&b={second.pk}$"))
    expect(page.locator("#card-diff .diff-added")).to_contain_text("v2")
    page.goto(f"{live_server.url}/backbones/{first.backbone_id}/")
    page.click("#lineage-link")
    page.wait_for_url(re.compile(rf"/lineage/{first.backbone_id}/$"))
    expect(page.locator(f'#lineage-graph svg a[data-node="head:{second.pk}"]')).to_be_visible()
    assert errors == []


@pytest.mark.django_db
def test_the_control_says_why_it_is_not_offered(client, make_member):
    first, _ = _two_approved_versions(make_member)
    mo, _ = make_member("mo", role="member")
    client.force_login(mo)
    page = client.get(f"/heads/{first.pk}/").content.decode()
    assert 'id="btn-move-alias"' not in page and "Only reviewers and admins move aliases." in page
    client.force_login(get_user_model().objects.get(username="ava"))
    page = client.get(f"/heads/{first.pk}/").content.decode()
    assert 'id="btn-move-alias"' not in page and "You authored this version" in page
    response = client.post(f"/heads/{first.pk}/alias/", {"name": "champion"}, follow=True)
    assert "You authored sentiment v1" in response.content.decode()


@pytest.mark.django_db
def test_webhooks_page_creates_shows_the_secret_once_and_queues_a_test(client, make_member, settings):
    from releases.models import Webhook, WebhookDelivery

    settings.MODELHUB_WEBHOOK_QUEUE = "nobody-consumes-this"
    rita, _ = make_member("rita", role="reviewer")
    client.force_login(rita)
    assert 'id="webhooks-link"' in client.get("/team/").content.decode()
    settings.MODELHUB_WEBHOOK_ALLOWED_HOSTS = []
    form = {"url": "http://127.0.0.1:9/hook", "events": ["alias.moved"], "secret": "0123456789abcdef-secret"}
    page = client.post("/webhooks/", form).content.decode()
    assert "loopback" in page and not Webhook.objects.exists()
    settings.MODELHUB_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    page = client.post("/webhooks/", form).content.decode()
    assert "0123456789abcdef-secret" in page and 'id="webhook-created"' in page
    webhook = Webhook.objects.get()
    listing = client.get("/webhooks/").content.decode()
    assert "0123456789abcdef-secret" not in listing and "...cret" in listing
    response = client.post(f"/webhooks/{webhook.pk}/", {"action": "test"}, follow=True)
    assert "Test event queued" in response.content.decode()
    assert WebhookDelivery.objects.filter(webhook=webhook, event="webhook.test").count() == 1
    assert "webhook.test" in response.content.decode()

    mo, _ = make_member("mo", role="member")
    client.force_login(mo)
    assert "Reviewers and admins only" in client.get("/webhooks/").content.decode()
    assert client.get(f"/webhooks/{webhook.pk}/").status_code == 404
