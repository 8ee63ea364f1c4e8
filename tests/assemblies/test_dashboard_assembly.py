"""Build an assembly in the dashboard in headless Chromium with a real worker: pick the backbone,
select all approved heads, build, watch it become ready, read the verification table, try it on
a random example, and download the zip whose sha256 is the one shown on the page."""

import hashlib
import re

import pytest
from playwright.sync_api import expect

from assemblies import views as assembly_views
from tests.registry_helpers import import_and_approve

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

BUILD_TIMEOUT_MS = 240_000  # a fresh worker imports TensorFlow, builds and verifies the SavedModel


def task_rows(page) -> list[str]:
    return [" ".join(row.split()) for row in page.locator("#task-id-table tbody tr").all_inner_texts()]


def test_build_try_and_download_an_assembly(
    logged_in_page, live_server, model_files, celery_worker, api_client_for, monkeypatch
):
    author = api_client_for("alice")
    reviewer = api_client_for("rita", role="reviewer")
    imported = import_and_approve(author, reviewer, model_files)
    backbone_id = str(imported["backbone"])

    page = logged_in_page("dana", team="vision", role="admin")
    page.click("nav.nav >> text=Assemblies")
    expect(page.locator(".empty")).to_contain_text("No assemblies yet")
    page.locator("a.btn", has_text="New assembly").first.click()

    # Choosing the backbone reloads the page with ?backbone=ID; its three approved heads are pre-ticked.
    page.select_option("#id_backbone", backbone_id)
    page.wait_for_url(re.compile(rf"\?backbone={backbone_id}$"))
    heads = page.locator("#head-table tbody tr")
    expect(heads).to_have_count(3)
    expect(page.locator("#select-all")).to_be_checked()
    assert task_rows(page) == ["0 box v1 4", "1 sentiment v1 3", "2 topic v1 5"]

    # The filter narrows the rows "select all" acts on; the task_id table and sizes follow the ticks.
    page.fill("#head-filter", "sent")
    expect(page.locator("#head-table tbody tr:visible")).to_have_count(1)
    page.uncheck("#select-all")
    page.fill("#head-filter", "")
    assert task_rows(page) == ["0 box v1 4", "1 topic v1 5"]
    expect(page.locator("#num-heads")).to_have_text("2")
    expect(page.locator("#select-all")).not_to_be_checked()
    page.check("#select-all")
    assert task_rows(page) == ["0 box v1 4", "1 sentiment v1 3", "2 topic v1 5"]
    expect(page.locator("#num-heads")).to_have_text("3")
    merged = int(page.locator("#merged-bytes").get_attribute("data-bytes"))
    separate = int(page.locator("#separate-bytes").get_attribute("data-bytes"))
    assert separate > merged > 0
    expect(page.locator("#size-ratio")).to_have_text(f"{separate / merged:.2f}×")

    page.fill("#id_name", "reviews")
    page.click("#btn-build")
    page.wait_for_url(re.compile(r"/assemblies/\d+/$"))
    expect(page.locator(".flash-success")).to_contain_text("Assembly queued: 3 heads")
    expect(page.locator("#status-badge")).to_have_text("ready", timeout=BUILD_TIMEOUT_MS)  # the poller reloads

    verification = page.locator("#verification-table")
    for task in ("box", "sentiment", "topic"):
        expect(verification).to_contain_text(task)
    expect(page.locator("#verification-result")).to_have_text("passed")
    expect(verification.locator(".pill-yes")).to_have_count(4)  # three heads and the overall row
    expect(page.locator("#task-table")).to_contain_text("sentiment")
    expect(page.locator("#rest-body")).to_contain_text('"task_id": [1]')

    # Try it: a seeded random example through a worker; outputs by index with the argmax marked. The
    # request does not wait for the worker: the page follows the prediction and shows it when done.
    monkeypatch.setattr(assembly_views, "TRY_IT_WAIT_SECONDS", 0)
    page.select_option("#id_task_id", "2")
    page.check("input[name=source][value=random]")
    page.click("#btn-try")
    page.wait_for_url(re.compile(r"/assemblies/\d+/try/\d+/#try-it$"))
    outputs = page.locator("#trial-outputs")
    expect(outputs).to_be_visible(timeout=90_000)
    expect(page.locator("#trial-result")).to_contain_text("Outputs of topic")
    expect(outputs.locator("tbody tr")).to_have_count(5)
    expect(outputs.locator("tr.best")).to_have_count(1)

    shown_sha256 = page.locator("#sha256").input_value()
    assert re.fullmatch(r"[0-9a-f]{64}", shown_sha256)
    with page.expect_download() as download_info:
        page.click("#btn-download")
    download = download_info.value
    assert download.suggested_filename == "reviews.zip"
    with open(download.path(), "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()
    assert digest == shown_sha256

    # The list shows the new assembly.
    page.click("nav.nav >> text=Assemblies")
    expect(page.locator("#assembly-table")).to_contain_text("reviews")
    expect(page.locator("#assembly-table .badge")).to_have_text("ready")
