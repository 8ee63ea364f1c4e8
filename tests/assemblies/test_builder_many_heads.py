"""The assembly builder with more approved heads than it lists (BUILDER_MAX_ROWS, lowered here):
"every task" is offered as one tick box with its count and bytes, the heads are paged and
searched on the server, and both choices build through the form. Also the other pages that
used to render every head: the backbone page and the task filter of the head list."""

import re

import pytest

from assemblies import views as assembly_views
from assemblies.models import Assembly
from backbones import views as backbone_views
from heads.forms import MAX_TASK_CHOICES
from heads.models import HeadVersion
from tests.heads.test_query_counts import MAX_QUERIES, counts_at_3_and_30
from tests.heads.test_query_counts import team as team  # noqa: F401 - the fixture
from tests.view_helpers import backbone_row, head_row

pytestmark = pytest.mark.django_db

APPROVED = HeadVersion.Status.APPROVED


@pytest.fixture
def alice(make_member):
    return make_member("alice", team="vision", role="member")[0]


@pytest.fixture
def many(alice, monkeypatch):
    """Five tasks with approved heads (two versions of 'b-task'), a draft; the builder lists at most 3."""
    monkeypatch.setattr(assembly_views, "BUILDER_MAX_ROWS", 3)
    monkeypatch.setattr(assembly_views, "BUILDER_PAGE_SIZE", 2)
    monkeypatch.setattr(assembly_views, "MAX_TASK_ID_ROWS", 2)
    backbone = backbone_row(alice)
    heads = {
        "a": head_row(alice, backbone, task="a-task", status=APPROVED),
        "b1": head_row(alice, backbone, task="b-task", status=APPROVED),
        "b2": head_row(alice, backbone, task="b-task", status=APPROVED, output_width=4),
        "c": head_row(alice, backbone, task="c-task", status=APPROVED),
        "d": head_row(alice, backbone, task="d-task", status=APPROVED),
        "draft": head_row(alice, backbone, task="e-task"),
    }
    return backbone, heads


def test_builder_offers_every_task_counted_and_summed(client, alice, many):
    backbone, heads = many
    client.force_login(alice)
    page = client.get(f"/assemblies/new/?backbone={backbone.pk}").content.decode()
    latest = [heads[key] for key in ("a", "b2", "c", "d")]
    latest_bytes = sum(head.blob.size_bytes for head in latest)
    box = re.search(r'<input type="checkbox" name="all_latest"[^>]*>', page).group(0)
    assert "checked" in box and f'data-num-heads="4" data-heads-bytes="{latest_bytes}"' in box
    assert "(5)" in page  # approved heads in all
    # One page of rows, unticked (the tick box covers them), with a link to the next page.
    rows = re.findall(r'name="heads" value="(\d+)"([^>]*)>', page)
    assert [int(pk) for pk, _ in rows] == [heads["a"].pk, heads["b1"].pk]
    assert not any("checked" in attrs for _, attrs in rows)
    assert f"?backbone={backbone.pk}&amp;page=2" in page
    # The task_id table: the first MAX_TASK_ID_ROWS tasks of "every task", then how many more.
    latest_table = page[page.index('id="task-id-latest"') : page.index("</tbody>", page.index('id="task-id-latest"'))]
    assert re.findall(r'<td class="mono">(\d+)</td><td>([\w-]+) <span class="muted small">v(\d+)', latest_table) == [
        ("0", "a-task", "1"),
        ("1", "b-task", "2"),
    ]
    assert "and 2 more tasks" in latest_table
    sizes = page[page.index('id="size-comparison"') :]
    assert '<span id="num-heads">4</span> separate models' in sizes
    merged = backbone.blob.size_bytes + latest_bytes
    assert f'id="merged-bytes" data-bytes="{merged}"' in sizes


def test_every_task_figures_follow_a_change_of_the_approved_heads(client, alice, many):
    """The "every task" count, bytes and rows are cached under a fingerprint of the approved heads:
    archiving one head and approving another (the same number of approved heads) shows the new set."""
    backbone, heads = many
    client.force_login(alice)
    path = f"/assemblies/new/?backbone={backbone.pk}"
    client.get(path)  # fills the cache
    HeadVersion.objects.filter(pk=heads["a"].pk).update(status=HeadVersion.Status.ARCHIVED)
    c2 = head_row(alice, backbone, task="c-task", status=APPROVED, output_width=5)
    page = client.get(path).content.decode()
    latest = [heads["b2"], c2, heads["d"]]
    box = re.search(r'<input type="checkbox" name="all_latest"[^>]*>', page).group(0)
    latest_bytes = sum(head.blob.size_bytes for head in latest)
    assert f'data-num-heads="3" data-heads-bytes="{latest_bytes}"' in box
    assert "(5)" in page  # b1, b2, c, c2, d
    table = page.split('id="task-id-latest"')[1].split("</tbody>")[0]
    rows = re.findall(r'<td class="mono">(\d+)</td><td>([\w-]+) <span class="muted small">v(\d+)</span>', table)
    assert rows == [("0", "b-task", "2"), ("1", "c-task", "2")]
    assert "and 1 more tasks" in table


def test_builder_search_and_pages_narrow_the_rows(client, alice, many):
    backbone, heads = many
    client.force_login(alice)
    second = client.get(f"/assemblies/new/?backbone={backbone.pk}&page=2").content.decode()
    assert re.findall(r'name="heads" value="(\d+)"', second) == [str(heads["b2"].pk), str(heads["c"].pk)]
    found = client.get(f"/assemblies/new/?backbone={backbone.pk}&q=b-ta").content.decode()
    assert re.findall(r'name="heads" value="(\d+)"', found) == [str(heads["b1"].pk), str(heads["b2"].pk)]
    assert 'value="b-ta"' in found
    nothing = client.get(f"/assemblies/new/?backbone={backbone.pk}&q=zzz").content.decode()
    assert "No approved head matches" in nothing


def test_builder_builds_every_task_or_the_ticked_heads(client, alice, many):
    backbone, heads = many
    client.force_login(alice)
    response = client.post("/assemblies/new/", {"backbone": backbone.pk, "all_latest": "on"}, follow=True)
    assembly = Assembly.objects.get()
    assert [(e.task_id, e.head_id) for e in assembly.entries.order_by("task_id")] == [
        (0, heads["a"].pk),
        (1, heads["b2"].pk),
        (2, heads["c"].pk),
        (3, heads["d"].pk),
    ]
    assert "Assembly queued: 4 heads" in response.content.decode()

    ticked = client.post("/assemblies/new/", {"backbone": backbone.pk, "heads": [heads["d"].pk, heads["b1"].pk]})
    assert ticked.status_code == 302
    assert sorted(Assembly.objects.exclude(pk=assembly.pk).get().entries.values_list("head_id", flat=True)) == sorted(
        [heads["b1"].pk, heads["d"].pk]
    )
    empty = client.post("/assemblies/new/", {"backbone": backbone.pk}).content.decode()
    assert "Tick at least one approved head" in empty
    draft = client.post("/assemblies/new/", {"backbone": backbone.pk, "heads": [heads["draft"].pk]}).content.decode()
    assert "Select a valid choice" in draft
    assert Assembly.objects.count() == 2


def test_backbone_page_shows_the_first_heads_and_links_to_all(client, alice, monkeypatch):
    monkeypatch.setattr(backbone_views, "MAX_SHOWN_HEADS", 2)
    backbone = backbone_row(alice)
    for task in ("one", "two", "three"):
        head_row(alice, backbone, task=task)
    client.force_login(alice)
    page = client.get(f"/backbones/{backbone.pk}/").content.decode()
    assert page.count('href="/heads/') - page.count('href="/heads/?') >= 2
    assert "Showing 2 of 3 heads" in page and f"/heads/?backbone={backbone.pk}" in page


def test_head_list_filters_by_a_typed_task_slug_when_the_team_has_many_tasks(client, alice, monkeypatch):
    monkeypatch.setattr("heads.forms.MAX_TASK_CHOICES", 2)
    monkeypatch.setattr("heads.views.MAX_TASK_CHOICES", 2)
    assert MAX_TASK_CHOICES >= 100  # the real limit keeps the drop-down for ordinary teams
    backbone = backbone_row(alice)
    for task in ("one", "two", "three"):
        head_row(alice, backbone, task=task)
    client.force_login(alice)
    page = client.get("/heads/?task=two").content.decode()
    assert re.search(r'<input type="text" name="task" value="two"', page)
    assert "<strong>two</strong>" in page and "<strong>one</strong>" not in page


def test_builder_with_more_heads_than_it_lists_makes_a_fixed_number_of_queries(team, client, monkeypatch):
    """The builder's paged form makes a fixed number of queries too (3 vs 30 heads, as in
    tests/heads/test_query_counts.py)."""
    monkeypatch.setattr(assembly_views, "BUILDER_MAX_ROWS", 2)
    client.force_login(team["alice"])
    few, many = counts_at_3_and_30(team, client, lambda team: f"/assemblies/new/?backbone={team['backbone'].pk}")
    assert few == many <= MAX_QUERIES
