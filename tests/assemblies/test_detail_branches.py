"""The assembly page's trunk and branches (issue 10), with Django's test client (no worker): where
the trunk is cut and the distinct branches with the tasks that use each, read from the manifest
once built and from the head versions before; nothing new for an assembly without branches."""

import html
import re

import pytest

from artifacts.services import blob_store_bytes
from assemblies import selectors as assembly_selectors
from assemblies.models import Assembly
from backbones.models import BackboneVersion
from heads.models import HeadVersion
from tests.assemblies.manifests import with_branches
from tests.view_helpers import SPEC, assembly_row, backbone_row, head_row

pytestmark = pytest.mark.django_db

APPROVED = HeadVersion.Status.APPROVED


@pytest.fixture
def alice(make_member):
    return make_member("alice", team="vision", role="member")[0]


def branched_head(user, backbone, *, task: str, weights: bytes, after_layer: str = "hidden") -> HeadVersion:
    """An approved head owning the backbone's 'features' layer above `after_layer` (its branch `weights`)."""
    return head_row(
        user, backbone, task=task, status=APPROVED, branch_blob=blob_store_bytes(data=weights).blob,
        branch={"after_layer": after_layer, "layers": ["features"], "params": 78},
    )  # fmt: skip


@pytest.fixture
def heads(alice):
    """On backbone `tiny`: box on branch B, intent and topic on one branch A (the same artifact), plain sentiment.

    In task order (task_id): box 0, intent 1, sentiment 2, topic 3.
    """
    backbone = backbone_row(alice)
    found = {
        "box": branched_head(alice, backbone, task="box", weights=b"branch B"),
        "intent": branched_head(alice, backbone, task="intent", weights=b"branch A"),
        "sentiment": head_row(alice, backbone, task="sentiment", status=APPROVED),
        "topic": branched_head(alice, backbone, task="topic", weights=b"branch A"),
    }
    assert found["intent"].branch_blob_id == found["topic"].branch_blob_id != found["box"].branch_blob_id
    return backbone, found


def text(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def branch_rows(page: str) -> list[str]:
    table = page.split('id="branch-table"', 1)[1].split("</table>", 1)[0]
    return [text(row) for row in re.findall(r"<tr data-after-layer=.*?</tr>", table, re.S)]


def trunk_line(page: str) -> str:
    return text(page.split('id="trunk-cut">', 1)[1].split("</p>", 1)[0])


def test_a_built_assembly_lists_the_trunk_cut_and_each_distinct_branch_with_its_tasks(client, alice, heads):
    backbone, found = heads
    assembly = with_branches(assembly_row(alice, backbone, list(found.values())), branch_points=["hidden"])
    client.force_login(alice)
    page = client.get(f"/assemblies/{assembly.pk}/").content.decode()
    assert "Trunk and branches" in page
    assert trunk_line(page) == (
        "The trunk is cut after hidden into 2 segments, computed once per call. Rows whose task has a branch leave "
        "the trunk at its branch point and go through that branch (each distinct branch once per call, on its rows "
        "only); 1 task reads the whole backbone."
    )
    sha_a, sha_b = found["topic"].branch_blob.sha256, found["box"].branch_blob.sha256
    # Two distinct branches at the same point, in order of their first task; A serves two tasks.
    assert branch_rows(page) == [
        f"after hidden {sha_b[:10]}… 1 78 0 box",
        f"after hidden {sha_a[:10]}… 1 78 1 intent , 3 topic",
    ]
    table = page.split('id="branch-table"', 1)[1].split("</table>", 1)[0]
    for task in ("box", "intent", "topic"):
        assert f'href="/heads/{found[task].pk}/"' in table
    assert "sentiment" not in table


def test_the_figures_come_from_the_manifest_once_built(client, alice, heads):
    backbone, found = heads
    assembly = with_branches(assembly_row(alice, backbone, list(found.values())), branch_points=["hidden"])
    manifest = assembly.manifest
    manifest["heads"][0]["branch"] = dict(manifest["heads"][0]["branch"], layers=3, params=12345)
    manifest["backbone"]["trunk"]["segments"] = 7
    Assembly.objects.filter(pk=assembly.pk).update(manifest=manifest)
    client.force_login(alice)
    page = client.get(f"/assemblies/{assembly.pk}/").content.decode()
    assert "into 7 segments" in trunk_line(page)
    assert branch_rows(page)[0].endswith("3 12,345 0 box")


def test_before_the_build_the_branches_come_from_the_head_versions_in_graph_order(client, alice, monkeypatch):
    backbone = backbone_row(alice)
    layers = [
        {"name": "inputs", "type": "InputLayer", "params": 0},
        {"name": "zeta", "type": "Dense", "params": 72},
        {"name": "alpha", "type": "Dense", "params": 42},
        {"name": "features", "type": "Dense", "params": 42},
    ]
    BackboneVersion.objects.filter(pk=backbone.pk).update(spec={**SPEC, "layers": layers})
    low = [branched_head(alice, backbone, task=f"low-{i}", weights=b"low", after_layer="zeta") for i in range(3)]
    high = branched_head(alice, backbone, task="a-high", weights=b"high", after_layer="alpha")
    assembly = assembly_row(alice, backbone, [*low, high], status=Assembly.Status.QUEUED)
    assert assembly.manifest == {}
    monkeypatch.setattr(assembly_selectors, "MAX_BRANCH_TASKS_SHOWN", 2)
    client.force_login(alice)
    page = client.get(f"/assemblies/{assembly.pk}/").content.decode()
    # The backbone's order (zeta below alpha), not the names' or the tasks' order; every task branches: no top segment.
    assert trunk_line(page).startswith("The build will cut the trunk after zeta , alpha into 2 segments,")
    assert trunk_line(page).endswith("every task has a branch.")
    rows = branch_rows(page)
    assert [row.split()[1] for row in rows] == ["zeta", "alpha"]
    assert rows[0].endswith("1 78 1 low-0 , 2 low-1 and 1 more")  # three tasks, two named
    assert rows[1].endswith("1 78 0 a-high")


def test_an_assembly_without_branches_shows_nothing_new(client, alice):
    backbone = backbone_row(alice)
    plain = [head_row(alice, backbone, task=task, status=APPROVED) for task in ("sentiment", "topic")]
    client.force_login(alice)
    for status in (Assembly.Status.READY, Assembly.Status.QUEUED):
        assembly = assembly_row(alice, backbone, plain[: 1 if status == Assembly.Status.QUEUED else 2], status=status)
        page = client.get(f"/assemblies/{assembly.pk}/").content.decode()
        assert 'id="task-table"' in page
        assert 'id="branches"' not in page and "Trunk and branches" not in page and "trunk" not in page.lower()
