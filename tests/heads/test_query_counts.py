"""The lists of heads make a fixed number of queries, whatever the number of heads (issue 13).

Each request is counted with 3 and with 30 approved heads on one backbone (a query per row
would show as a difference) and must stay within MAX_QUERIES. bench/listing.py measures the
same requests with 10,000 heads.
"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from heads.models import HeadVersion
from tests.view_helpers import backbone_row, head_row

pytestmark = pytest.mark.django_db

MAX_QUERIES = 10


@pytest.fixture
def team(make_member):
    alice, _ = make_member("alice", team="vision", role="member")
    rita, _ = make_member("rita", team="vision", role="reviewer")
    return {"alice": alice, "rita": rita, "backbone": backbone_row(alice)}


def add_heads(team: dict, num_heads: int) -> None:
    """Give the team's backbone `num_heads` more approved heads (new tasks), reviewed by rita."""
    start = HeadVersion.objects.count()
    for index in range(start, start + num_heads):
        head = head_row(team["alice"], team["backbone"], task=f"task-{index:03d}", status=HeadVersion.Status.APPROVED)
        HeadVersion.objects.filter(pk=head.pk).update(reviewed_by=team["rita"])


def count_queries(client, path: str) -> int:
    """Count the queries of a GET of `path`, after one uncounted GET (first-use writes: token, session)."""
    client.get(path)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(path)
    assert response.status_code == 200, path
    return len(queries.captured_queries)


def counts_at_3_and_30(team: dict, client, path_of) -> tuple[int, int]:
    add_heads(team, 3)
    few = count_queries(client, path_of(team))
    add_heads(team, 27)
    many = count_queries(client, path_of(team))
    return few, many


@pytest.mark.parametrize(
    "path_of",
    [
        pytest.param(lambda team: f"/api/heads/?backbone={team['backbone'].pk}", id="api_list"),
        pytest.param(lambda team: f"/api/heads/?backbone={team['backbone'].pk}&page_size=2&page=2", id="api_page"),
    ],
)
def test_api_head_list_makes_a_fixed_number_of_queries(team, api_client_for, path_of):
    client = api_client_for("reader")
    few, many = counts_at_3_and_30(team, client, path_of)
    assert few == many <= MAX_QUERIES


@pytest.mark.parametrize(
    "path_of",
    [
        pytest.param(lambda team: f"/heads/?backbone={team['backbone'].pk}", id="dashboard_heads"),
        pytest.param(lambda team: "/heads/?page=1", id="dashboard_heads_page"),
        pytest.param(lambda team: f"/backbones/{team['backbone'].pk}/", id="backbone_detail"),
        pytest.param(lambda team: f"/assemblies/new/?backbone={team['backbone'].pk}", id="assembly_builder"),
    ],
)
def test_dashboard_pages_make_a_fixed_number_of_queries(team, client, path_of):
    client.force_login(team["alice"])
    few, many = counts_at_3_and_30(team, client, path_of)
    assert few == many <= MAX_QUERIES
