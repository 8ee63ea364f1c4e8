"""The Overview page (the dashboard's home) shows the current team's work in a constant number of queries.

Rows are made through the services where one exists (submissions, jobs, aliases, assemblies) and as
a worker leaves them otherwise (imports, datasets, job progress), on the real database. The last
test drives the page in headless Chromium.
"""

import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from artifacts.services import blob_store_bytes
from assemblies.models import Assembly
from heads.models import HeadVersion, ModelImport
from heads.services import head_transition
from releases.services import alias_set
from teams.models import Team
from tests.view_helpers import assembly_row, backbone_row, head_row
from training.models import Dataset, Job
from training.services import job_create
from training.specs import job_spec_parse

SECTIONS = ("reviews", "jobs", "imports", "assemblies", "aliases", "datasets")


def grow_job(user, backbone, *, status=Job.Status.RUNNING, progress=None, **fields) -> Job:
    """A grow_backbone job as job_create stores it, then as its worker leaves it (status, progress)."""
    spec = job_spec_parse(Job.Kind.GROW_BACKBONE, {"backbone": backbone.pk, "widen": {"layer": "hidden", "units": 9}})
    job = job_create(team=backbone.team, user=user, spec=spec, **fields)
    Job.objects.filter(pk=job.pk).update(status=status, progress=progress or {})
    job.refresh_from_db()
    return job


def add_work(*, team: str, author, reviewer, count: int, tag: str, backbone=None) -> dict:
    """Add `count` of each thing the Overview shows to `team`: names carry `tag`. Return what was made."""
    backbone = backbone or backbone_row(author, team=team, name=f"bb-{tag}")
    team_row = Team.objects.get(slug=team)
    made = {"reviews": [], "jobs": [], "imports": [], "assemblies": [], "moves": [], "datasets": []}
    for i in range(count):
        head = head_row(author, backbone, task=f"review-{tag}-{i}")
        made["reviews"].append(head_transition(head=head, user=author, action="submit"))
        made["jobs"].append(grow_job(author, backbone, progress={"epoch": 1, "epochs": 4, "step": 0, "steps": 1}))
        made["imports"].append(
            ModelImport.objects.create(
                team=team_row, backbone_name=f"import-{tag}-{i}", created_by=author, status=ModelImport.Status.SUCCEEDED
            )
        )
        approved = head_row(author, backbone, task=f"served-{tag}-{i}", status=HeadVersion.Status.APPROVED)
        made["assemblies"].append(
            assembly_row(author, backbone, [approved], status=Assembly.Status.QUEUED, name=f"asm-{tag}-{i}")
        )
        alias, _ = alias_set(
            user=reviewer, team=team_row, task_slug=approved.task.slug, name="champion", head_id=approved.pk
        )
        made["moves"].append(alias)
        made["datasets"].append(
            Dataset.objects.create(
                team=team_row, name=f"data-{tag}-{i}", format=Dataset.Format.NPZ, status=Dataset.Status.READY,
                blob=blob_store_bytes(data=f"dataset {tag} {i}".encode()).blob, num_examples=10 + i, created_by=author,
            )
        )  # fmt: skip
    return made


@pytest.fixture
def vision(make_member):
    """Team 'vision': alice and bob review, mia is a member; team 'other' has olga and work of its own."""
    alice, _ = make_member("alice", team="vision", role="reviewer")
    bob, _ = make_member("bob", team="vision", role="reviewer")
    mia, _ = make_member("mia", team="vision", role="member")
    olga, _ = make_member("olga", team="other", role="admin")
    olga_peer, _ = make_member("oscar", team="other", role="reviewer")
    add_work(team="other", author=olga, reviewer=olga_peer, count=1, tag="secret")
    return {"alice": alice, "bob": bob, "mia": mia}


def overview_of(user) -> str:
    browser = Client()
    browser.force_login(user)
    response = browser.get("/")
    assert response.status_code == 200
    return response.content.decode()


def section(html: str, name: str) -> str:
    """The HTML of one section of the page (id overview-<name>)."""
    match = re.search(rf'<section class="card card-flush" id="overview-{name}">(.*?)</section>', html, re.S)
    assert match, f"no section {name}"
    return match.group(1)


def rows(html: str, name: str) -> int:
    return section(html, name).count("<tr")


@pytest.mark.django_db
def test_the_number_of_queries_is_the_same_for_one_or_thirty_of_each_thing(vision):
    alice, bob = vision["alice"], vision["bob"]
    backbone = backbone_row(bob, name="shared")
    add_work(team="vision", author=bob, reviewer=alice, count=1, tag="first", backbone=backbone)
    browser = Client()
    browser.force_login(alice)
    browser.get("/")  # warm up: the session and content types are read once
    with CaptureQueriesContext(connection) as one:
        html_one = browser.get("/").content.decode()
    add_work(team="vision", author=bob, reviewer=alice, count=29, tag="more", backbone=backbone)
    with CaptureQueriesContext(connection) as thirty:
        html_thirty = browser.get("/").content.decode()
    assert len(one.captured_queries) == len(thirty.captured_queries), [q["sql"] for q in thirty.captured_queries]
    # 9 measured: the session, the user, the memberships, then one query per section.
    assert len(thirty.captured_queries) <= 10, [q["sql"] for q in thirty.captured_queries]
    for name in SECTIONS:
        assert rows(html_one, name) == 1, name
        assert rows(html_thirty, name) == 5, name  # the 5 newest, then a link to all
    assert "See all in the review queue (more waiting)" in section(html_thirty, "reviews")
    assert "review-more-28" in html_thirty and "review-more-23" not in html_thirty  # newest first


@pytest.mark.django_db
def test_each_section_lists_the_teams_items_with_links(vision):
    alice, bob = vision["alice"], vision["bob"]
    made = add_work(team="vision", author=bob, reviewer=alice, count=2, tag="t")
    grow_job(bob, made["assemblies"][0].backbone, status=Job.Status.SUCCEEDED)  # finished: not on the overview
    html = overview_of(alice)
    reviews = section(html, "reviews")
    for head in made["reviews"]:
        assert f'href="/heads/{head.pk}/"' in reviews and f"review-t-{head.task.slug[-1]}" in reviews
    assert 'href="/review/"' in reviews and "submitted" in reviews
    jobs = section(html, "jobs")
    assert rows(html, "jobs") == 2
    for job in made["jobs"]:
        assert f'href="/jobs/{job.pk}/"' in jobs
    assert 'aria-valuenow="25"' in jobs and "epoch 1/4 · 25%" in jobs  # 1 of 4 epochs, as the jobs page counts
    for item in made["imports"]:
        assert f'href="/heads/imports/{item.pk}/"' in section(html, "imports") and item.backbone_name in html
    for assembly in made["assemblies"]:
        assert f'href="/assemblies/{assembly.pk}/"' in section(html, "assemblies")
    assert "1 head on bb-t v1" in section(html, "assemblies")
    aliases = section(html, "aliases")
    for alias in made["moves"]:
        assert f'href="/heads/tasks/{alias.task.slug}/aliases/"' in aliases
        assert f"{alias.task.slug}@champion" in aliases
    assert "set to v1" in aliases and "alice" in aliases
    datasets = section(html, "datasets")
    for dataset in made["datasets"]:
        assert f'href="/datasets/{dataset.pk}/"' in datasets and dataset.name in datasets
    assert 'href="/datasets/"' in datasets


@pytest.mark.django_db
def test_another_teams_items_are_never_shown(vision):
    html = overview_of(vision["alice"])
    assert "secret" not in html  # team 'other' has one of each thing, all named *secret*
    for name in SECTIONS:
        assert rows(html, name) == 0, name


@pytest.mark.django_db
def test_empty_sections_say_what_to_do_next(vision):
    html = overview_of(vision["alice"])
    assert "No datasets yet." in section(html, "datasets") and 'href="/datasets/upload/"' in section(html, "datasets")
    assert 'href="/jobs/new/"' in section(html, "jobs")
    assert 'href="/heads/import/"' in section(html, "imports")
    assert 'href="/assemblies/new/"' in section(html, "assemblies")
    assert "No alias set yet" in section(html, "aliases")
    assert "Nothing waiting for you" in section(html, "reviews")


@pytest.mark.django_db
def test_four_eyes_your_own_submissions_and_versions_you_authored_by_provenance_are_not_waiting_for_you(vision):
    alice, bob = vision["alice"], vision["bob"]
    backbone = backbone_row(bob)
    theirs = head_transition(head=head_row(bob, backbone, task="bobs"), user=bob, action="submit")
    own = head_transition(head=head_row(alice, backbone, task="alices"), user=alice, action="submit")
    # bob requested a job, alice retried it, and the retry made a version bob created: alice authored it too.
    first = grow_job(bob, backbone, status=Job.Status.FAILED)
    retry = grow_job(bob, backbone, status=Job.Status.SUCCEEDED, retried_by=alice, retry_of=first)
    retrained = head_row(bob, backbone, task="retrained", job=retry)
    retrained = head_transition(head=retrained, user=bob, action="submit")

    reviews = section(overview_of(alice), "reviews")
    assert f'href="/heads/{theirs.pk}/"' in reviews
    assert f'href="/heads/{own.pk}/"' not in reviews
    assert f'href="/heads/{retrained.pk}/"' not in reviews  # created by bob, but alice retried the job

    for_bob = section(overview_of(bob), "reviews")
    assert f'href="/heads/{own.pk}/"' in for_bob
    assert f'href="/heads/{theirs.pk}/"' not in for_bob and f'href="/heads/{retrained.pk}/"' not in for_bob

    for_mia = section(overview_of(vision["mia"]), "reviews")  # a member: may not approve
    assert "3 head versions waiting for a reviewer" in for_mia and "you are <strong>member</strong>" in for_mia
    assert "<tr" not in for_mia


@pytest.mark.django_db
def test_the_review_queue_offers_no_approval_where_you_authored_by_provenance(vision):
    alice, bob = vision["alice"], vision["bob"]
    backbone = backbone_row(bob)
    theirs = head_transition(head=head_row(bob, backbone, task="bobs"), user=bob, action="submit")
    first = grow_job(bob, backbone, status=Job.Status.FAILED)
    retry = grow_job(bob, backbone, status=Job.Status.SUCCEEDED, retried_by=alice, retry_of=first)
    retrained = head_transition(head=head_row(bob, backbone, task="retrained", job=retry), user=bob, action="submit")
    browser = Client()
    browser.force_login(alice)

    page = browser.get("/review/").content.decode()

    row_of = {
        head.pk: re.search(rf'href="/heads/{head.pk}/">.*?</tr>', page, re.S).group(0) for head in (theirs, retrained)
    }
    assert "Approve" in row_of[theirs.pk] and "another reviewer decides" not in row_of[theirs.pk]
    assert "Approve" not in row_of[retrained.pk]
    assert "You retried job " in row_of[retrained.pk] and "another reviewer decides" in row_of[retrained.pk]


@pytest.mark.django_db
def test_bulk_provenance_gives_head_version_authors_answer_without_a_query_per_head(make_member):
    """head_provenance_load caches the chains: head_version_authors then gives its own answer, query-free."""
    from heads.selectors import head_provenance_load, head_version_authors
    from heads.services import heads_carry

    users = {name: make_member(name, team="vision", role="reviewer")[0] for name in ("ann", "ben", "cat", "dan")}
    parent = backbone_row(users["ann"])
    original = head_row(users["ann"], parent, task="old-task")
    head_transition(head=head_transition(head=original, user=users["ann"], action="submit"), user=users["dan"],
                    action="approve")  # fmt: skip
    first = grow_job(users["ben"], parent, status=Job.Status.FAILED)
    retry = grow_job(users["ben"], parent, status=Job.Status.SUCCEEDED, retried_by=users["cat"], retry_of=first)
    child = backbone_row(users["ben"], parent=parent)
    [copy] = heads_carry(parent=parent, backbone=child, user=users["cat"], reason={"kind": "test"}, job=retry)
    grandchild = backbone_row(users["ben"], parent=child)
    [copy_of_copy] = heads_carry(parent=child, backbone=grandchild, user=users["dan"], reason={"kind": "t"})
    ids = [original.pk, copy.pk, copy_of_copy.pk]

    def fresh():
        return list(HeadVersion.objects.filter(pk__in=ids).select_related("task").order_by("pk"))

    expected = {head.pk: head_version_authors(head=head) for head in fresh()}
    assert set(expected[copy_of_copy.pk]) == {users[name].pk for name in ("ann", "ben", "cat", "dan")}
    for loaded, num_queries in ((fresh(), 2), (fresh()[-1:], 4)):
        with CaptureQueriesContext(connection) as loading:
            head_provenance_load(heads=loaded)
        with CaptureQueriesContext(connection) as reading:
            got = {head.pk: head_version_authors(head=head) for head in loaded}
        assert got == {head.pk: expected[head.pk] for head in loaded}
        assert len(reading.captured_queries) == 0
        # All three given: one query for the jobs, one for the job retried. The last alone: one
        # more per step of its carried chain (copy, then the original).
        assert len(loading.captured_queries) == num_queries, [q["sql"] for q in loading.captured_queries]


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_overview_in_chromium_shows_the_sections_and_a_link_navigates(logged_in_page, live_server, make_member):
    from playwright.sync_api import expect

    page = logged_in_page("dana", team="vision", role="admin")
    author, _ = make_member("bob", team="vision", role="reviewer")
    made = add_work(team="vision", author=author, reviewer=page_user("dana"), count=1, tag="b")
    page.goto(f"{live_server.url}/")
    for name, title in zip(
        SECTIONS,
        (
            "Waiting for your review",
            "Running and queued jobs",
            "Recent imports",
            "Assemblies",
            "Alias moves",
            "Datasets",
        ),
        strict=True,
    ):
        expect(page.locator(f"#overview-{name} h2")).to_have_text(title)
    expect(page.locator("#overview-jobs .progress > span")).to_have_attribute("style", re.compile(r"width:\s*25%"))
    dataset = made["datasets"][0]
    page.locator("#overview-datasets a", has_text=dataset.name).click()
    page.wait_for_url(f"{live_server.url}/datasets/{dataset.pk}/")
    expect(page.locator("h1")).to_contain_text(dataset.name)
    page.goto(f"{live_server.url}/")
    page.locator("#overview-reviews a", has_text="review-b-0").click()
    page.wait_for_url(f"{live_server.url}/heads/{made['reviews'][0].pk}/")


def page_user(username: str):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(username=username)
