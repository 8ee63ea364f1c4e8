"""Upload → submit → approve through the dashboard in headless Chromium, with a real worker."""

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WORKER_TIMEOUT_MS = 120_000  # the first task in a fresh worker imports TensorFlow


def log_in(page, live_server, username: str) -> None:
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", "pw-Secret-123")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")


def test_upload_submit_and_approve_a_head(logged_in_page, live_server, make_member, model_files, celery_worker):
    # Member A uploads a backbone and waits on its page until the worker has validated it.
    page = logged_in_page("alice", team="vision", role="member")
    page.click("nav.nav >> text=Backbones")
    page.locator("a.btn", has_text="Upload backbone").first.click()
    page.fill("#id_name", "tiny")
    page.fill("#id_feature_layer", "features")
    page.set_input_files("#id_file", str(model_files["backbone"]))
    page.click("form.form button[type=submit]")
    badge = page.locator("#status-badge")
    expect(badge).to_have_text("ready", timeout=WORKER_TIMEOUT_MS)  # the poller reloads the page once
    expect(page.locator("#layer-table")).to_contain_text("features")

    # A uploads a head on it through the form, waits for the draft, and submits it for review.
    page.click("text=Upload a head")
    expect(page.locator("#id_backbone option:checked")).to_contain_text("tiny v1")
    page.fill("#id_task", "sentiment")
    page.fill("#id_labels", "negative, neutral, positive")
    page.fill("#id_description", "## Sentiment\n\nThree classes for **short** reviews.")
    page.set_input_files("#id_file", str(model_files["head"]))
    page.click("form.form button[type=submit]")
    expect(badge).to_have_text("draft", timeout=WORKER_TIMEOUT_MS)
    expect(page.locator("#model-card strong")).to_have_text("short")
    expect(page.locator("#review-panel")).not_to_contain_text("Approve")
    page.click("#btn-submit")
    expect(badge).to_have_text("in review")
    expect(page.locator("#review-note")).to_contain_text("Only reviewers and admins")
    head_url = page.url

    # Reviewer B logs in, finds it in the review queue and approves it.
    page.click("text=Log out alice")
    page.wait_for_url(f"{live_server.url}/login/")
    make_member("rita", team="vision", role="reviewer")
    log_in(page, live_server, "rita")
    page.click("nav.nav >> text=Review queue")
    queue = page.locator("#review-table")
    expect(queue).to_contain_text("sentiment")
    expect(queue).to_contain_text("alice")
    queue.locator("a", has_text="Approve").first.click()
    assert page.url.split("#")[0] == head_url
    page.fill("#review-comment", "Checked the labels. LGTM")
    page.click("#btn-approve")
    expect(page.locator(".flash-success")).to_contain_text("Approved sentiment v1.")
    expect(page.locator("#status-badge")).to_have_text("approved")

    history = page.locator("#history")
    expect(history).to_contain_text("Submitted for review")
    expect(history).to_contain_text("Approved")
    expect(history.locator(".event-submit")).to_contain_text("alice")
    expect(history.locator(".event-approve")).to_contain_text("rita")
    expect(history.locator(".event-approve")).to_contain_text("LGTM")

    page.click("nav.nav >> text=Review queue")
    expect(page.locator(".empty")).to_contain_text("Nothing to review")
