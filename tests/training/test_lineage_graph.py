"""The lineage graph of a backbone family: page, JSON, links, collapsing, constant queries."""

import pytest

from backbones.models import BackboneVersion
from heads.models import HeadVersion
from tests.training.helpers import dataset_row
from tests.view_helpers import assembly_row, backbone_row, head_row
from training.models import Job
from training.services import job_create
from training.specs import job_spec_parse

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(make_member):
    return make_member("alice", team="vision", role="member")[0]


def grow_job(user, parent, dataset) -> Job:
    params = {
        "backbone": parent.pk,
        "insert": {"after_layer": "hidden", "kind": "dense"},
        "train": {"dataset": dataset.pk},
    }
    return job_create(team=parent.team, user=user, spec=job_spec_parse("grow_backbone", params))


def family(user, num_versions: int, dataset):
    """A root with a chain of grown children (each made by a job), every third one also branching."""
    root = backbone_row(user)
    versions = [root]
    for index in range(1, num_versions):
        parent = versions[(index - 1) if index % 3 else max(index - 2, 0)]
        child = backbone_row(user, parent=parent)
        job = grow_job(user, parent, dataset)
        BackboneVersion.objects.filter(pk=child.pk).update(origin={"kind": "grow", "job": job.pk})
        versions.append(child)
    return versions


def test_lineage_graph_links_every_node_and_collapses_many_heads(client, alice):
    dataset = dataset_row(alice, name="quadrants")
    root, child, grandchild = family(alice, 3, dataset)
    unrelated = backbone_row(alice, name="other")
    heads = [
        head_row(alice, root, task=f"task-{i}", status=HeadVersion.Status.APPROVED, dataset=dataset) for i in range(5)
    ]
    trained = head_row(alice, child, task="quadrant", origin={"kind": "job", "job": 4242})
    assembly = assembly_row(alice, root, heads[:2], name="edge-bundle")
    child.refresh_from_db()
    job = child.origin["job"]
    client.force_login(alice)

    page = client.get(f"/lineage/{child.pk}/").content.decode()
    graph = page.split('id="lineage-graph"', 1)[1].split("</section>", 1)[0]
    for url in (
        f"/backbones/{root.pk}/", f"/backbones/{child.pk}/", f"/backbones/{grandchild.pk}/",
        f"/heads/{heads[-1].pk}/", f"/heads/{trained.pk}/", f"/heads/?backbone={root.pk}",
        f"/datasets/{dataset.pk}/", f"/jobs/{job}/", f"/assemblies/{assembly.pk}/",
    ):  # fmt: skip
        assert f'href="{url}"' in graph, url
    assert f'href="/heads/{heads[0].pk}/"' not in graph  # older than the newest three: in "+2 heads"
    assert "+2 heads" in graph and f'href="/backbones/{unrelated.pk}/"' not in graph
    assert 'class="node node-backbone current"' in graph and "<script" not in graph
    assert graph.count('data-kind="parent"') == 2
    assert f'href="/lineage/{root.pk}/"' in client.get(f"/backbones/{root.pk}/").content.decode()

    body = client.get(f"/api/backbones/{grandchild.pk}/lineage/").json()
    assert body["root"] == root.pk and body["num_versions"] == 3
    ids = {node["id"] for node in body["nodes"]}
    assert {f"backbone:{root.pk}", f"head:{trained.pk}", f"heads:{root.pk}", f"assembly:{assembly.pk}"} <= ids
    assert f"dataset:{dataset.pk}" in ids and f"job:{job}" in ids
    edges = {(e["source"], e["target"], e["kind"]) for e in body["edges"]}
    assert (f"backbone:{root.pk}", f"backbone:{child.pk}", "parent") in edges
    assert (f"job:{job}", f"backbone:{child.pk}", "made") in edges
    assert (f"dataset:{dataset.pk}", f"job:{job}", "input") in edges
    assert (f"backbone:{root.pk}", f"assembly:{assembly.pk}", "assembly") in edges
    assert (f"head:{heads[-1].pk}", f"dataset:{dataset.pk}", "trained_on") in edges
    assert [n for n in body["nodes"] if n["id"] == f"heads:{root.pk}"][0]["label"] == "+2 heads"


@pytest.mark.parametrize("num_versions", [3, 50])
def test_lineage_page_queries_do_not_grow_with_the_family(client, alice, django_assert_max_num_queries, num_versions):
    dataset = dataset_row(alice, name="quadrants")
    versions = family(alice, num_versions, dataset)
    for version in versions[::5]:
        for index in range(4):
            head_row(alice, version, task=f"t{index}", dataset=dataset, origin={"kind": "job", "job": 1})
    client.force_login(alice)
    with django_assert_max_num_queries(18):
        page = client.get(f"/lineage/{versions[-1].pk}/")
    assert page.status_code == 200
    assert page.content.decode().count('class="node node-backbone') == num_versions
    with django_assert_max_num_queries(16):
        assert len(client.get(f"/api/backbones/{versions[-1].pk}/lineage/").json()["nodes"]) > num_versions


def test_other_teams_lineage_is_404(client, alice, make_member):
    root = backbone_row(alice)
    client.force_login(make_member("olga", team="audio")[0])
    assert client.get(f"/api/backbones/{root.pk}/lineage/").status_code == 404
    assert client.get(f"/lineage/{root.pk}/").status_code == 404
