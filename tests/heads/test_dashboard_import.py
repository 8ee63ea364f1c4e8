"""The dashboard's import form: file-by-file uploads with progress bars (Chromium), and the no-JS form."""

import os
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from playwright.sync_api import expect

from artifacts.models import Blob, Upload
from heads.models import ModelImport, ModelImportFile


def _fill_import_form(logged_in_page, live_server, tmp_path, *, size: int):
    """Log in as a member, open the import form, choose two random-byte files and name the backbone.

    feature_layer is left empty: the worker picks it. Returns the page and the files' paths.
    """
    page = logged_in_page("ivy", team="vision", role="member")
    paths = [tmp_path / "sentiment.keras", tmp_path / "topic.keras"]
    for path in paths:
        path.write_bytes(os.urandom(size))
    page.goto(f"{live_server.url}/heads/import/")
    page.set_input_files("#id_files", [str(path) for path in paths])
    page.fill("#id_backbone_name", "shared")
    return page, paths


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_import_form_uploads_each_file_with_a_progress_bar_then_opens_the_import(logged_in_page, live_server, tmp_path):
    page, paths = _fill_import_form(logged_in_page, live_server, tmp_path, size=300_000)

    held = []  # hold the import request so that the finished upload bars can be checked first
    page.route("**/api/imports/", lambda route: held.append(route))
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/api/imports/")) as created:
        page.click("form.form button[type=submit]")
    rows = page.locator("#upload-table tbody tr")
    expect(rows).to_have_count(2)
    for path in paths:
        row = page.locator(f"#upload-table tr[data-upload-file='{path.name}']")
        expect(row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
        expect(row).to_contain_text("100%")
        expect(row).to_contain_text("uploaded")
    uploads = list(Upload.objects.order_by("pk").values_list("pk", "filename"))
    assert [name for _, name in uploads] == ["sentiment.keras", "topic.keras"]
    assert created.value.post_data_json == {
        "team": "vision",
        "backbone_name": "shared",
        "feature_layer": "",
        "branches": False,  # unticked: the strict import, and no min_shared_fraction sent
        "uploads": [pk for pk, _ in uploads],
    }
    assert len(held) == 1
    held[0].continue_()

    page.wait_for_url(re.compile(r"/heads/imports/\d+/$"))
    model_import = ModelImport.objects.get()
    assert page.url.endswith(f"/heads/imports/{model_import.pk}/")
    # Queued, or already picked up when a session worker runs (random bytes fail validation).
    expect(page.locator("#status-badge")).to_have_text(re.compile(r"queued|running|failed"))
    expect(page.locator("#report-table")).to_contain_text("sentiment.keras")
    expect(page.locator("#report-table")).to_contain_text("topic.keras")
    assert list(model_import.files.values_list("filename", "task_slug")) == [
        ("sentiment.keras", "sentiment"),
        ("topic.keras", "topic"),
    ]
    assert (model_import.feature_layer, model_import.created_by.username) == ("", "ivy")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_import_form_sends_branches_and_the_least_shared_fraction(logged_in_page, live_server, tmp_path):
    page, _ = _fill_import_form(logged_in_page, live_server, tmp_path, size=50_000)
    page.check("#id_branches")
    page.fill("#id_min_shared_fraction", "0.3")
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/api/imports/")) as created:
        page.click("form.form button[type=submit]")
    assert created.value.status == 202, created.value.text()
    body = created.value.request.post_data_json
    assert (body["branches"], body["min_shared_fraction"]) == (True, 0.3)
    page.wait_for_url(re.compile(r"/heads/imports/\d+/$"))
    model_import = ModelImport.objects.get()
    assert (model_import.branches, model_import.min_shared_fraction) == (True, 0.3)
    expect(page.locator("main")).to_contain_text("branches allowed (trunk ≥ 30% of the backbone)")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_import_form_shows_the_apis_field_error_and_resubmits_without_uploading_again(
    logged_in_page, live_server, tmp_path
):
    page, _ = _fill_import_form(logged_in_page, live_server, tmp_path, size=50_000)
    page.fill("#id_tasks", "only-one")
    page.click("form.form button[type=submit]")
    expect(page.locator("#upload-error")).to_contain_text("give one per file")
    expect(page.locator(".field-error")).to_contain_text("give one per file")
    assert ModelImport.objects.count() == 0 and Upload.objects.count() == 2

    uploads_sent = []
    page.on("request", lambda r: uploads_sent.append(r.url) if r.url.endswith("/api/uploads/") else None)
    page.fill("#id_tasks", "sentiment, topic")
    page.click("form.form button[type=submit]")
    page.wait_for_url(re.compile(r"/heads/imports/\d+/$"))
    assert uploads_sent == [] and Upload.objects.count() == 2
    assert list(ModelImport.objects.get().files.values_list("task_slug", flat=True)) == ["sentiment", "topic"]


# --- Without JavaScript: the form posts every file to the dashboard view -----------------------


@pytest.fixture
def member_client(client, make_member):
    user, _ = make_member("ivy", team="vision", role="member")
    client.force_login(user)
    return client


def keras_file(name: str) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, os.urandom(1_000), content_type="application/octet-stream")


@pytest.mark.django_db
def test_no_js_form_imports_without_a_feature_layer(member_client):
    response = member_client.post(
        "/heads/import/",
        {"backbone_name": "shared", "feature_layer": "", "files": [keras_file("a.keras"), keras_file("b.keras")]},
    )
    model_import = ModelImport.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/heads/imports/{model_import.pk}/"
    assert model_import.feature_layer == "" and model_import.files.count() == 2
    page = member_client.get(response["Location"]).content.decode()
    assert "deepest layer the models share" in page


@pytest.mark.django_db
def test_no_js_form_single_file_needs_a_feature_layer(member_client):
    response = member_client.post("/heads/import/", {"backbone_name": "shared", "files": [keras_file("a.keras")]})
    assert response.status_code == 200
    assert "feature_layer is required when importing a single model" in response.content.decode()
    assert ModelImport.objects.count() == 0 and ModelImportFile.objects.count() == 0 and Blob.objects.count() == 0


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_import_form_waits_out_the_uploads_rate_limit_and_sends_the_file_again(
    logged_in_page, live_server, tmp_path, settings
):
    # One upload a minute: the second is refused whatever the machine's speed (at "1/s" a busy machine
    # sent it after the window had passed), and the form waits out the Retry-After (under a minute).
    settings.MODELHUB_THROTTLE_RATES = {**settings.MODELHUB_THROTTLE_RATES, "uploads": "1/min"}
    page, paths = _fill_import_form(logged_in_page, live_server, tmp_path, size=20_000)
    statuses = []
    page.on("response", lambda r: statuses.append(r.status) if r.url.endswith("/api/uploads/") else None)
    page.route("**/api/imports/", lambda route: route.abort())  # only the uploads matter here
    page.click("form.form button[type=submit]")
    for path in paths:
        row = page.locator(f"#upload-table tr[data-upload-file='{path.name}']")
        # Both uploads, one of them after waiting out its 429's Retry-After, on a busy machine.
        expect(row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100", timeout=90_000)
    assert 429 in statuses and statuses.count(201) == 2, statuses
    assert sorted(Upload.objects.values_list("filename", flat=True)) == ["sentiment.keras", "topic.keras"]
