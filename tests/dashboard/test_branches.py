"""Trunk and branches in the dashboard (issue 10): the head page's branch line and layer table, the
backbone page's layer-stack diagram with the branch points marked and labelled with their heads,
the assembly builder's trunk, branches and bytes saved, and the worker that finds a backbone's
possible branch points (cached per file). Django's test client against the real database; the
last test drives the pages in headless Chromium with a real worker."""

import re

import pytest
from django.core.cache import cache
from django.db import connection
from django.template.defaultfilters import filesizeformat
from django.test.utils import CaptureQueriesContext
from django.utils.html import strip_tags
from playwright.sync_api import expect

from artifacts.services import blob_store_bytes
from assemblies import views as assembly_views
from backbones.models import BackboneVersion
from backbones.selectors import branch_points_cache_key, branch_points_pending_key
from backbones.services import backbone_version_create
from backbones.work.validation import backbone_branch_points_describe
from heads.models import HeadVersion
from teams.models import Team
from tests.conftest import wait_until
from tests.view_helpers import SPEC, backbone_row, head_row

APPROVED = HeadVersion.Status.APPROVED
NUM_LAYERS = 160
TYPES = ("Conv2D", "BatchNormalization", "ReLU", "Add")


def long_spec() -> dict:
    """A spec like a MobileNetV2's: 160 layers, the last one the features."""
    layers = [{"name": "input", "type": "InputLayer", "params": 0, "trainable": True, "has_weights": False}]
    for index in range(1, NUM_LAYERS):
        kind = TYPES[index % len(TYPES)]
        params = 100 * index if kind in ("Conv2D", "BatchNormalization") else 0
        layers.append(
            {
                "name": f"layer_{index:03d}",
                "type": kind,
                "params": params,
                "trainable": True,
                "has_weights": bool(params),
            }
        )
    return {**SPEC, "feature_layer": layers[-1]["name"], "layers": layers}


def long_backbone(user, *, name: str = "mobile", data: bytes | None = None, spec: dict | None = None):
    blob = blob_store_bytes(data=data if data is not None else f"backbone {name} {NUM_LAYERS}".encode()).blob
    return backbone_version_create(
        team=Team.objects.get(slug="vision"), user=user, name=name, blob=blob, filename=f"{name}.keras",
        status=BackboneVersion.Status.READY, spec=spec or long_spec(),
    )  # fmt: skip


def branch_fields(after: int, *, params: int, tag: str, num_layers: int | None = None) -> dict:
    """A head's branch after layer_<after> up to the features, stored as its own blob."""
    last = NUM_LAYERS - 1 if num_layers is None else after + num_layers
    layers = [f"layer_{index:03d}" for index in range(after + 1, last + 1)]
    return {
        "branch_blob": blob_store_bytes(data=f"branch after {after} of {tag}".encode() * (after + 3)).blob,
        "branch": {"after_layer": f"layer_{after:03d}", "layers": layers, "params": params},
    }


def text_of(html: str) -> str:
    return " ".join(strip_tags(html).split())


def section(page: str, marker: str, end: str = "</section>") -> str:
    start = page.index(marker)
    return page[start : page.index(end, start)]


@pytest.fixture
def alice(client, make_member):
    user, _ = make_member("alice", team="vision", role="member")
    client.force_login(user)
    return user


@pytest.fixture(autouse=True)
def fresh_cache():
    """Backbone blobs made here have the same bytes in every test: forget what earlier tests cached."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def sent_tasks(monkeypatch):
    """Record the Celery tasks sent by name (no worker runs in the client tests)."""
    from modelhub.celery import app

    sent = []
    monkeypatch.setattr(app, "send_task", lambda name, args=None, **kw: sent.append((name, args)))
    return sent


# --- Head page --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_head_page_shows_where_the_head_branches_and_the_layers_it_owns(client, alice):
    backbone = long_backbone(alice)
    head = head_row(alice, backbone, task="topic", **branch_fields(150, params=1234567, tag="topic"))
    response = client.get(f"/heads/{head.pk}/")
    assert response.status_code == 200
    page = response.content.decode()
    card = section(page, 'id="branch"')
    assert "Branches after layer_150: 9 layers, 1,234,567 params" in text_of(card)
    assert text_of(filesizeformat(head.branch_blob.size_bytes)) in text_of(card)
    assert f"/backbones/{backbone.pk}/#branch-diagram" in card
    rows = re.findall(r'<tr data-layer="([\w]+)"><td class="muted">(\d+)</td><td><code>\1</code></td><td>(\w+)</td>'
                      r'<td class="num">(\d+)</td>', card)  # fmt: skip
    spec_layers = long_spec()["layers"]
    assert rows == [
        (f"layer_{index:03d}", str(index), spec_layers[index]["type"], str(spec_layers[index]["params"]))
        for index in range(151, 160)
    ]
    assert "branches after <code>layer_150</code>" in section(page, '<header class="page-head">', "</header>")


@pytest.mark.django_db
def test_head_page_without_a_branch_has_no_branch_card(client, alice):
    head = head_row(alice, backbone_row(alice), task="sentiment")
    response = client.get(f"/heads/{head.pk}/")
    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="branch"' not in page and "Branches after" not in page and "branches after" not in page


@pytest.mark.django_db
def test_branch_layers_missing_from_the_spec_show_dashes(client, alice):
    backbone = backbone_row(alice)  # layers inputs, hidden, features
    fields = {
        "branch_blob": blob_store_bytes(data=b"nested branch").blob,
        "branch": {"after_layer": "base/hidden", "layers": ["base/features", "base/extra"], "params": 78},
    }
    head = head_row(alice, backbone, task="topic", **fields)
    card = section(client.get(f"/heads/{head.pk}/").content.decode(), 'id="branch"')
    assert "Branches after base/hidden: 2 layers, 78 params" in text_of(card)
    assert '<tr data-layer="base/features"><td class="muted">2</td>' in card  # matched by its leaf name
    assert '<tr data-layer="base/extra"><td class="muted">—</td><td><code>base/extra</code></td><td>—</td>' in card


# --- Backbone page ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_backbone_diagram_marks_each_branch_point_with_its_heads(client, alice, sent_tasks):
    backbone = long_backbone(alice)
    topic = head_row(alice, backbone, task="topic", status=APPROVED, **branch_fields(120, params=900, tag="t"))
    intent = head_row(alice, backbone, task="intent", **branch_fields(120, params=900, tag="i"))
    urgency = head_row(alice, backbone, task="urgency", **branch_fields(150, params=300, tag="u"))
    archived = head_row(
        alice, backbone, task="old", status=HeadVersion.Status.ARCHIVED, **branch_fields(60, params=5, tag="o")
    )
    plain = head_row(alice, backbone, task="sentiment")

    response = client.get(f"/backbones/{backbone.pk}/")
    assert response.status_code == 200
    page = response.content.decode()
    diagram = section(page, 'id="branch-diagram"')
    svg = section(diagram, "<svg", "</svg>")

    points = re.findall(r'<g class="stack-row stack-point[^"]*" data-layer="(\w+)" data-index="(\d+)" '
                        r'data-num-heads="(\d+)">', svg)  # fmt: skip
    assert points == [("layer_120", "120", "2"), ("layer_150", "150", "1")]
    point_120 = section(svg, 'data-layer="layer_120"', "</g>")
    assert 'class="branch-marker"' in point_120
    assert "after layer_120 · 39 layers, 900 params · 2 heads" in point_120
    assert f'href="/heads/{topic.pk}/" data-head="{topic.pk}"' in point_120 and ">topic v1<" in point_120
    assert f'data-head="{intent.pk}"' in point_120 and ">intent v1<" in point_120
    point_150 = section(svg, 'data-layer="layer_150"', "</g>")
    assert f'data-head="{urgency.pk}"' in point_150 and "after layer_150 · 9 layers, 300 params · 1 head" in point_150
    assert f'data-head="{archived.pk}"' not in svg and 'data-layer="layer_060"' not in svg  # archived: left out
    assert f'data-head="{plain.pk}"' not in svg
    assert svg.count('class="stack-lane"') == 2

    # 160 layers stay readable: the input, the points and the features are rows, long runs collapse.
    layer_rows = re.findall(r'data-layer="(\w+)" data-index="(\d+)"', svg)
    assert [name for name, _ in layer_rows] == ["input", "layer_120", "layer_150", "layer_159"]
    runs = [tuple(map(int, run)) for run in re.findall(r'data-first-index="(\d+)" data-num-layers="(\d+)"', svg)]
    assert runs == [(1, 119), (121, 29), (151, 8)]
    assert "… 119 layers<" in svg  # the worker has not answered: no count of possible points yet
    assert 'id="points-pending"' in diagram

    # The page asked a worker, once, for the possible branch points of this file.
    assert sent_tasks == []  # sent on commit, and a test-client GET runs inside the test's transaction
    assert cache.get(branch_points_pending_key(backbone.blob.sha256)) == backbone.pk

    # The heads table on the same page names each head's branch point.
    heads_table = section(page, 'id="head-table"', "</table>")
    assert "after <code>layer_120</code>" in heads_table and "after <code>layer_150</code>" in heads_table


@pytest.mark.django_db
def test_backbone_diagram_counts_the_possible_branch_points_once_a_worker_found_them(client, alice):
    backbone = long_backbone(alice)
    head_row(alice, backbone, task="topic", **branch_fields(120, params=900, tag="t"))
    possible = [f"layer_{index:03d}" for index in range(2, 159, 4)]  # every 4th layer from layer_002
    cache.set(branch_points_cache_key(backbone.blob.sha256), [{"layer": name} for name in possible], None)
    svg = section(client.get(f"/backbones/{backbone.pk}/").content.decode(), "<svg", "</svg>")
    expected_in_first_run = sum(1 for name in possible if 1 <= int(name[-3:]) <= 119)
    assert f"… 119 layers · {expected_in_first_run} possible branch points<" in svg
    assert "… 38 layers · 10 possible branch points<" in svg  # layers 121-158 (159 is the features row)
    page = client.get(f"/backbones/{backbone.pk}/").content.decode()
    assert 'id="points-pending"' not in page and "where a head could branch" in page


@pytest.mark.django_db
def test_backbone_diagram_without_branches_and_with_an_unknown_point(client, alice, django_capture_on_commit_callbacks,
                                                                     sent_tasks):  # fmt: skip
    backbone = backbone_row(alice)  # 3 layers: drawn whole
    head_row(alice, backbone, task="sentiment")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.get(f"/backbones/{backbone.pk}/")
    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="no-branches"' in page
    assert re.findall(r'data-layer="(\w+)" data-index', page) == ["inputs", "hidden", "features"]
    assert "stack-elided" not in page and "stack-point" not in page
    assert sent_tasks == [("backbones.describe_branch_points", [backbone.pk])]
    with django_capture_on_commit_callbacks(execute=True):
        client.get(f"/backbones/{backbone.pk}/")
    assert len(sent_tasks) == 1  # asked once until the answer or the retry delay

    fields = {
        "branch_blob": blob_store_bytes(data=b"elsewhere").blob,
        "branch": {"after_layer": "not_a_layer", "layers": ["x"], "params": 1},
    }
    head = head_row(alice, backbone, task="topic", **fields)
    page = client.get(f"/backbones/{backbone.pk}/").content.decode()
    note = section(page, 'id="unplaced-points"', "</p>")
    assert "<code>not_a_layer</code>" in note and f'href="/heads/{head.pk}/"' in note


@pytest.mark.django_db
def test_backbone_page_reads_branches_in_a_fixed_number_of_queries(client, alice):
    backbone = long_backbone(alice)

    def add(num_heads: int) -> int:
        start = HeadVersion.objects.count()
        for index in range(start, start + num_heads):
            fields = branch_fields(100 + index % 3 * 20, params=7, tag=str(index))
            head_row(alice, backbone, task=f"task-{index:03d}", status=APPROVED, **fields)
        client.get(f"/backbones/{backbone.pk}/")
        with CaptureQueriesContext(connection) as queries:
            response = client.get(f"/backbones/{backbone.pk}/")
        assert response.status_code == 200
        return len(queries.captured_queries)

    assert add(3) == add(27)
    svg = section(client.get(f"/backbones/{backbone.pk}/").content.decode(), "<svg", "</svg>")
    assert re.findall(r'data-layer="(\w+)" data-index="\d+" data-num-heads="(\d+)"', svg) == [
        ("layer_100", "10"), ("layer_120", "10"), ("layer_140", "10"),
    ]  # fmt: skip
    assert svg.count("+6 more<") == 3  # 4 heads shown per point, newest first


# --- Assembly builder -------------------------------------------------------------------------


@pytest.mark.django_db
def test_builder_shows_the_trunk_the_branches_and_the_bytes_saved(client, alice):
    backbone = long_backbone(alice, data=b"x" * 50_000)
    topic = head_row(alice, backbone, task="topic", status=APPROVED, **branch_fields(120, params=900, tag="t"))
    urgency = head_row(alice, backbone, task="urgency", status=APPROVED, **branch_fields(150, params=300, tag="u"))
    plain = head_row(alice, backbone, task="sentiment", status=APPROVED)
    heads = [plain, topic, urgency]

    page = client.get(f"/assemblies/new/?backbone={backbone.pk}").content.decode()
    backbone_bytes = backbone.blob.size_bytes
    heads_bytes = sum(head.blob.size_bytes for head in heads)
    branches_bytes = topic.branch_blob.size_bytes + urgency.branch_blob.size_bytes
    merged = backbone_bytes + branches_bytes + heads_bytes
    separate = 3 * backbone_bytes + heads_bytes  # a full model per head: a whole backbone and the head
    saved = 2 * backbone_bytes - branches_bytes
    assert separate - merged == saved > 0

    sizes = section(page, 'id="size-comparison"')
    assert f'id="merged-bytes" data-bytes="{merged}"' in sizes
    assert f'id="separate-bytes" data-bytes="{separate}"' in sizes
    assert f'<span data-exact="saved">{saved}</span>' in sizes
    assert f'<span data-exact="branches">{branches_bytes}</span>' in sizes
    assert f'<span data-exact="trunk">{backbone_bytes}</span>' in sizes
    assert f'<span data-exact="heads">{heads_bytes}</span>' in sizes
    assert '+ <span id="num-branches">2</span> branch<span id="branches-plural">es</span>' in sizes

    branches = section(page, 'id="trunk-branches"')
    assert "Trunk" in section(branches, 'id="trunk-row"', "</tr>")
    ticked = section(branches, 'id="branch-ticked"', "</tbody>")
    assert re.findall(r'<tr data-task="([\w-]+)"><td>[\w-]+ <span class="muted small">v1</span></td>'
                      r"<td><code>(\w+)</code></td><td class=\"num\">([\d,]+)</td>", ticked) == [
        ("topic", "layer_120", "900"), ("urgency", "layer_150", "300"),
    ]  # fmt: skip
    assert 'id="branch-empty" hidden' in branches

    table = section(page, 'id="head-table"', "</table>")
    assert (
        f'data-branch-after="layer_120" data-branch-params="900" data-branch-bytes="{topic.branch_blob.size_bytes}"'
        in table
    )
    assert table.count("data-branch-bytes") == 2


@pytest.mark.django_db
def test_builder_without_branches_keeps_the_old_estimate(client, alice):
    backbone = backbone_row(alice)
    heads = [head_row(alice, backbone, task=task, status=APPROVED) for task in ("a-task", "b-task")]
    response = client.get(f"/assemblies/new/?backbone={backbone.pk}")
    assert response.status_code == 200
    page = response.content.decode()
    heads_bytes = sum(head.blob.size_bytes for head in heads)
    assert f'id="merged-bytes" data-bytes="{backbone.blob.size_bytes + heads_bytes}"' in page
    assert f'<span data-exact="saved">{backbone.blob.size_bytes}</span>' in page
    assert '<span id="num-branches">0</span>' in page
    assert re.search(r'id="branch-empty"\s*>', page)  # shown: no head owns a branch
    assert "data-branch-bytes" not in page


@pytest.mark.django_db
def test_builder_with_every_task_groups_the_branches_by_point(client, alice, monkeypatch):
    monkeypatch.setattr(assembly_views, "BUILDER_MAX_ROWS", 2)
    backbone = long_backbone(alice, data=b"y" * 40_000)
    heads = [
        head_row(alice, backbone, task="a-task", status=APPROVED, **branch_fields(120, params=900, tag="a")),
        head_row(alice, backbone, task="b-task", status=APPROVED, **branch_fields(120, params=900, tag="b")),
        head_row(alice, backbone, task="c-task", status=APPROVED, **branch_fields(150, params=300, tag="c")),
        head_row(alice, backbone, task="d-task", status=APPROVED),
    ]
    page = client.get(f"/assemblies/new/?backbone={backbone.pk}").content.decode()
    branches_bytes = sum(head.branch_blob.size_bytes for head in heads[:3])
    heads_bytes = sum(head.blob.size_bytes for head in heads)
    box = section(page, 'id="id_all_latest"', ">")
    assert f'data-num-branches="3" data-branches-bytes="{branches_bytes}"' in box
    saved = 3 * backbone.blob.size_bytes - branches_bytes
    assert f'<span data-exact="saved">{saved}</span>' in page
    assert f'id="merged-bytes" data-bytes="{backbone.blob.size_bytes + branches_bytes + heads_bytes}"' in page
    latest = section(page, 'id="branch-latest"', "</tbody>")
    groups = re.findall(r'<tr data-after="(\w+)"><td>(\d+) heads?</td>', latest)
    assert groups == [("layer_120", "2"), ("layer_150", "1")]
    assert re.search(r'id="branch-ticked"\s+hidden', page)


# --- The worker that finds the possible branch points ------------------------------------------


@pytest.mark.django_db
def test_worker_finds_the_branch_points_once_per_file(alice, model_files, monkeypatch):
    from modelhub.ml import branches

    backbone = backbone_version_create(
        team=Team.objects.get(slug="vision"), user=alice, name="tiny",
        blob=blob_store_bytes(data=model_files["backbone"].read_bytes()).blob, filename="tiny.keras",
        status=BackboneVersion.Status.READY, spec=SPEC,
    )  # fmt: skip
    cache.set(branch_points_pending_key(backbone.blob.sha256), backbone.pk)
    points = backbone_branch_points_describe(backbone_id=backbone.pk)
    assert [point["layer"] for point in points] == ["hidden"]  # the features are the output: not a point
    assert points[0]["params_above"] == 78
    assert cache.get(branch_points_cache_key(backbone.blob.sha256)) == points
    assert cache.get(branch_points_pending_key(backbone.blob.sha256)) is None

    def fail(path):
        raise AssertionError("read the file again")

    monkeypatch.setattr(branches, "describe_points", fail)
    assert backbone_branch_points_describe(backbone_id=backbone.pk) == points  # from the cache
    assert backbone_branch_points_describe(backbone_id=10**9) is None  # gone: nothing to do


@pytest.mark.django_db
def test_worker_remembers_a_file_that_cannot_branch(alice):
    backbone = backbone_row(alice)  # its blob is not a .keras file
    assert backbone_branch_points_describe(backbone_id=backbone.pk) == []
    assert cache.get(branch_points_cache_key(backbone.blob.sha256)) == []


# --- Headless Chromium --------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_branches_in_the_browser(logged_in_page, live_server, celery_worker, model_files):
    from django.contrib.auth import get_user_model

    page = logged_in_page("dana", team="vision", role="admin")
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    dana = get_user_model().objects.get(username="dana")
    backbone = backbone_version_create(
        team=Team.objects.get(slug="vision"), user=dana, name="tiny",
        blob=blob_store_bytes(data=model_files["backbone"].read_bytes()).blob, filename="tiny.keras",
        status=BackboneVersion.Status.READY, spec=SPEC,
    )  # fmt: skip
    fields = {
        "branch_blob": blob_store_bytes(data=b"branch of topic").blob,
        "branch": {"after_layer": "hidden", "layers": ["features"], "params": 78},
    }
    topic = head_row(dana, backbone, task="topic", status=APPROVED, **fields)
    plain = head_row(dana, backbone, task="sentiment", status=APPROVED)

    page.goto(f"{live_server.url}/heads/{topic.pk}/")
    expect(page.locator("#branch-line")).to_have_text("Branches after hidden: 1 layer, 78 params")
    expect(page.locator("#branch-layer-table tbody tr")).to_have_count(1)
    page.goto(f"{live_server.url}/heads/{plain.pk}/")
    expect(page.locator("#status-badge")).to_have_text("approved")
    expect(page.locator("#branch")).to_have_count(0)

    page.goto(f"{live_server.url}/backbones/{backbone.pk}/")
    point = page.locator('#branch-diagram svg g.stack-point[data-layer="hidden"]')
    expect(point).to_be_visible()
    expect(point.locator("circle.branch-marker")).to_be_visible()
    expect(point.locator(".branch-caption")).to_have_text("after hidden · 1 layer, 78 params · 1 head")
    expect(page.locator("#branch-diagram svg path.stack-lane")).to_have_count(1)
    # The page asked the worker for the possible branch points; once it answered, they show.
    wait_until(lambda: cache.get(branch_points_cache_key(backbone.blob.sha256)) is not None, timeout=60,
               message="the worker to find the branch points")  # fmt: skip
    page.reload()
    expect(page.locator("#points-pending")).to_have_count(0)
    expect(page.locator("#branch-diagram")).to_contain_text("where a head could branch")
    point.locator(f'a[data-head="{topic.pk}"]').click()
    page.wait_for_url(re.compile(rf"/heads/{topic.pk}/$"))
    expect(page.locator("#branch-line")).to_contain_text("Branches after hidden")
    assert errors == []
