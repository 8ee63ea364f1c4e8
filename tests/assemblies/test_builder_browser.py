"""The assembly builder's script in headless Chromium, without a worker: choosing a backbone
reloads the page, and with more approved heads than it lists, the "every task" tick box turns the
row boxes off and restores its own task_id table and sizes."""

import re

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from assemblies import views as assembly_views
from heads.models import HeadVersion
from tests.view_helpers import backbone_row, head_row

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_every_task_box_switches_the_choice(logged_in_page, live_server, monkeypatch):
    monkeypatch.setattr(assembly_views, "BUILDER_MAX_ROWS", 2)
    monkeypatch.setattr(assembly_views, "BUILDER_PAGE_SIZE", 2)
    page = logged_in_page("dana", team="vision", role="admin")
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    dana = get_user_model().objects.get(username="dana")
    first = backbone_row(dana, name="first")
    backbone = backbone_row(dana, name="second")
    for task in ("a-task", "b-task", "c-task"):
        head_row(dana, backbone, task=task, status=HeadVersion.Status.APPROVED)

    page.goto(f"{live_server.url}/assemblies/new/?backbone={first.pk}")
    page.select_option("#id_backbone", str(backbone.pk))
    page.wait_for_url(re.compile(rf"\?backbone={backbone.pk}$"))
    expect(page.locator("#id_all_latest")).to_be_checked()
    expect(page.locator("#num-heads")).to_have_text("3")
    expect(page.locator("#head-table input[name=heads]:disabled")).to_have_count(2)
    expect(page.locator("#task-id-latest tr")).to_have_count(3)

    page.uncheck("#id_all_latest")
    expect(page.locator("#head-table input[name=heads]:disabled")).to_have_count(0)
    expect(page.locator("#num-heads")).to_have_text("0")
    expect(page.locator("#btn-build")).to_be_disabled()
    page.check("#head-table input[name=heads] >> nth=1")
    assert [" ".join(r.split()) for r in page.locator("#task-id-ticked tr").all_inner_texts()] == ["0 b-task v1 3"]
    expect(page.locator("#num-heads")).to_have_text("1")

    page.check("#id_all_latest")
    expect(page.locator("#num-heads")).to_have_text("3")
    expect(page.locator("#task-id-ticked")).to_be_hidden()
    page.click("#btn-build")
    page.wait_for_url(re.compile(r"/assemblies/\d+/$"))
    expect(page.locator(".flash-success")).to_contain_text("Assembly queued: 3 heads")
    assert errors == []


def test_ticking_a_branched_head_adds_its_branch_to_the_estimate(logged_in_page, live_server):
    """Trunk and branches (issue 10): the branch table and the bytes saved follow the ticks."""
    from artifacts.services import blob_store_bytes

    page = logged_in_page("dana", team="vision", role="admin")
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    dana = get_user_model().objects.get(username="dana")
    backbone = backbone_row(dana, name="branched")
    branch_blob = blob_store_bytes(data=b"branch").blob
    topic = head_row(
        dana, backbone, task="topic", status=HeadVersion.Status.APPROVED, branch_blob=branch_blob,
        branch={"after_layer": "hidden", "layers": ["features"], "params": 78},
    )  # fmt: skip
    plain = head_row(dana, backbone, task="sentiment", status=HeadVersion.Status.APPROVED)

    def saved() -> int:
        return int(page.locator('[data-exact="saved"]').inner_text())

    page.goto(f"{live_server.url}/assemblies/new/?backbone={backbone.pk}")
    both = backbone.blob.size_bytes - branch_blob.size_bytes  # (2 - 1) x backbone - the branch
    assert both > 0 and saved() == both
    rows = [" ".join(row.split()) for row in page.locator("#branch-ticked tr").all_inner_texts()]
    assert rows == ["topic v1 hidden 78 6 bytes"]
    expect(page.locator("#branch-empty")).to_be_hidden()

    page.uncheck(f"#head-{topic.pk}")
    expect(page.locator("#branch-ticked tr")).to_have_count(0)
    expect(page.locator("#branch-empty")).to_be_visible()
    expect(page.locator("#num-branches")).to_have_text("0")
    assert saved() == 0  # one plain head: one full model is the merged model
    merged = backbone.blob.size_bytes + plain.blob.size_bytes
    expect(page.locator("#merged-bytes")).to_have_attribute("data-bytes", str(merged))

    page.check(f"#head-{topic.pk}")
    expect(page.locator("#num-branches")).to_have_text("1")
    expect(page.locator("#branches-plural")).to_have_text("")
    assert saved() == both
    assert errors == []
