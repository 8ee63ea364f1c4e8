"""Headless Chromium: pick two versions in a head's version list, read the compare page, then open
the backbone's lineage graph and follow a node to its page. No console errors, no CSP violations."""

import re

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from tests.heads.test_compare_views import evaluation_row, keras_head_row
from tests.training.helpers import dataset_row
from tests.view_helpers import backbone_row

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_compare_page_and_lineage_graph(logged_in_page, live_server, tmp_path):
    page = logged_in_page("dana", team="vision", role="admin")
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    dana = get_user_model().objects.get(username="dana")
    root = backbone_row(dana)
    child = backbone_row(dana, parent=root)
    a = keras_head_row(dana, root, tmp_path, seed=1, description="First cut.")
    b = keras_head_row(dana, child, tmp_path, seed=2, description="Second cut.")
    holdout = dataset_row(dana, name="holdout")
    evaluation_row(a, holdout, np.eye(3), accuracy=1.0, loss=0.1)
    evaluation_row(b, holdout, np.eye(3)[[0, 2, 1]], accuracy=1 / 3, loss=0.9)

    page.goto(f"{live_server.url}/heads/{b.pk}/")
    page.select_option("#compare-picker select[name=a]", str(a.pk))
    page.select_option("#compare-picker select[name=b]", str(b.pk))
    page.click("#compare-picker button[type=submit]")
    page.wait_for_url(re.compile(rf"/heads/compare/\?a={a.pk}&b={b.pk}$"))
    expect(page.locator("#compare-metrics")).to_contain_text("holdout")
    expect(page.locator("#compare-outputs")).to_contain_text("2 rows (67%)")
    expect(page.locator("#compare-weights")).to_contain_text("Same architecture")
    expect(page.locator("#card-diff .diff-added")).to_have_text("+ Second cut.")
    expect(page.locator("#metric-charts figure[data-metric=accuracy] polyline")).to_have_count(1)
    expect(page.locator("#metric-charts figure[data-metric=accuracy] circle")).to_have_count(2)

    page.goto(f"{live_server.url}/backbones/{root.pk}/")
    page.click("#lineage-link")
    page.wait_for_url(re.compile(rf"/lineage/{root.pk}/$"))
    graph = page.locator("#lineage-graph svg")
    expect(graph.locator("a.node-backbone")).to_have_count(2)
    expect(graph.locator("path[data-kind=parent]")).to_have_count(1)
    expect(graph.locator(f'a[data-node="head:{b.pk}"]')).to_be_visible()
    graph.locator(f'a[data-node="backbone:{child.pk}"]').click()
    page.wait_for_url(re.compile(rf"/backbones/{child.pk}/$"))
    assert errors == []
