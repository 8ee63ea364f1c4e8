"""Four eyes by provenance: every path that makes or moves a releasable version refuses its authors.

A head version's authors are its creator, the creators of every version it was carried from, and
whoever requested (or retried) a job that made it or them (heads.selectors.head_version_authors).
Each path below is tried by every author, through the HTTP API (or the admin's change form) on
the real database: each is refused with a message saying why, and nothing in the database
changes. Then someone else does the same and it is allowed. Jobs that need a worker run
in-process through the real runners (tiny models), except the fine_tune to a new backbone,
whose forgetting report is stored as its runner stores it.
"""

import datetime
from dataclasses import dataclass, field

import pytest
from django.contrib import admin
from django.test import Client, RequestFactory
from django.urls import reverse
from rest_framework.test import APIClient

from backbones.models import BackboneVersion
from core.models import AuditEvent
from heads.imports import import_create
from heads.models import HeadEvent, HeadVersion, ModelImport
from heads.services import head_transition
from releases.models import Alias, AliasMove
from releases.services import alias_set
from tests import model_factory as mf
from tests.view_helpers import backbone_row, head_row
from training.models import ForgettingReport, Job
from training.services import job_create, report_decide
from training.specs import job_spec_parse

pytestmark = pytest.mark.django_db

APPROVED = HeadVersion.Status.APPROVED


@dataclass
class People:
    users: dict
    clients: dict = field(default_factory=dict)


@pytest.fixture
def people(make_member) -> People:
    """Four reviewers of team 'vision' (staff too, for the admin paths) and an outsider author, erin."""
    crew = People(users={})
    for name in ("alice", "bob", "carol", "dave", "erin"):
        user, token = make_member(name, team="vision", role="reviewer")
        user.is_staff = user.is_superuser = True
        user.save()
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        crew.users[name], crew.clients[name] = user, client
    return crew


def db_state() -> dict:
    """Every row a refused action could touch, field by field."""
    models = (HeadVersion, HeadEvent, Alias, AliasMove, ForgettingReport, Job, BackboneVersion, AuditEvent)
    return {model.__name__: list(model.objects.order_by("pk").values()) for model in models}


@dataclass
class Case:
    """One path: who authored the version, how to act as someone, and what the allowed act must leave."""

    authors: list[str]
    other: str
    act: object  # (People, name) -> (allowed: bool, message: str)
    refusal: str  # what every refusal message says
    check_allowed: object = None  # () -> None


def api(response, *, allowed_status=(200, 201)) -> tuple[bool, str]:
    body = response.json()
    if response.status_code == 403:
        return False, body["error"]["message"]
    assert response.status_code in allowed_status, body
    return True, ""


def approve_api(head: HeadVersion):
    return lambda crew, name: api(crew.clients[name].post(f"/api/heads/{head.pk}/approve/"))


def alias_api(head: HeadVersion, name: str = "champion"):
    body = {"team": "vision", "task": head.task.slug, "name": name, "head": head.pk}
    return lambda crew, who: api(crew.clients[who].post("/api/aliases/", body, format="json"))


def in_review(author, backbone, task: str) -> HeadVersion:
    head = head_row(author, backbone, task=task)
    return head_transition(head=head, user=author, action="submit")


def approved_by(head: HeadVersion, reviewer) -> HeadVersion:
    head = head_transition(head=head, user=head.created_by, action="submit")
    return head_transition(head=head, user=reviewer, action="approve")


def tiny_backbone(user, tmp_path, seed: int = 0) -> BackboneVersion:
    from tests.training.helpers import backbone_version_row

    return backbone_version_row(user, tmp_path, seed=seed)


def run_job(user, kind: str, **params) -> Job:
    from training.work.jobs import job_run

    job = job_create(team=user.memberships.get().team, user=user, spec=job_spec_parse(kind, params))
    assert job.status == Job.Status.QUEUED, job.error
    job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    return job


def stored_job(user, kind: str, params: dict, *, retried_by=None, retry_of=None) -> Job:
    """A job row as job_create stores it, marked succeeded as its worker would leave it."""
    team = user.memberships.get().team
    job = job_create(team=team, user=user, spec=job_spec_parse(kind, params), retried_by=retried_by, retry_of=retry_of)
    Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCEEDED, error="")
    job.refresh_from_db()
    return job


def report_for(job: Job, parent: BackboneVersion, heads: list[HeadVersion]) -> ForgettingReport:
    """The report a fine_tune or trained grow_backbone runner stores (training.work.forgetting rows)."""
    child = backbone_row(job.created_by, parent=parent)
    rows = [
        {"head_version": h.pk, "task": h.task.slug, "metric": "accuracy", "before": 0.9, "after": 0.8, "delta": -0.1}
        for h in heads
    ]
    return ForgettingReport.objects.create(job=job, parent=parent, backbone=child, rows=rows)


def accept_api(report: ForgettingReport):
    return lambda crew, name: api(crew.clients[name].post(f"/api/forgetting-reports/{report.pk}/accept/"))


# --- The paths ----------------------------------------------------------------------------------


def path_approve(crew, tmp_path) -> Case:
    head = in_review(crew.users["alice"], backbone_row(crew.users["alice"]), "sentiment")

    def check():
        head.refresh_from_db()
        assert (head.status, head.reviewed_by) == (APPROVED, crew.users["dave"])

    return Case(["alice"], "dave", approve_api(head), "You authored sentiment v1", check)


def path_alias_set(crew, tmp_path) -> Case:
    head = approved_by(head_row(crew.users["alice"], backbone_row(crew.users["alice"])), crew.users["bob"])

    def check():
        assert Alias.objects.get(name="champion").head_id == head.pk

    return Case(["alice"], "dave", alias_api(head), "so you cannot point alias 'champion' at it", check)


def path_alias_move(crew, tmp_path) -> Case:
    backbone = backbone_row(crew.users["alice"])
    first = approved_by(head_row(crew.users["erin"], backbone), crew.users["bob"])
    alias_set(user=crew.users["bob"], team=backbone.team, task_slug="sentiment", name="champion", head_id=first.pk)
    second = approved_by(head_row(crew.users["alice"], backbone, description="v2"), crew.users["bob"])

    def check():
        assert Alias.objects.get(name="champion").head_id == second.pk
        assert AliasMove.objects.filter(action="move", to_head=second, actor=crew.users["dave"]).exists()

    return Case(["alice"], "dave", alias_api(second), "You authored sentiment v2", check)


def path_report_accept(crew, tmp_path) -> Case:
    """Bob's fine_tune changed the backbone under alice's approved head: neither may accept its report."""
    parent = backbone_row(crew.users["erin"])
    old = approved_by(head_row(crew.users["alice"], parent, task="old-task"), crew.users["erin"])
    job = stored_job(crew.users["bob"], "fine_tune", {"backbone": parent.pk, "dataset": 999, "task": "new"})
    report = report_for(job, parent, [old])

    def check():
        [copy] = HeadVersion.objects.filter(backbone=report.backbone)
        assert (copy.created_by, copy.carried_by, copy.carried_from, copy.job) == (
            crew.users["alice"], crew.users["dave"], old, job,
        )  # fmt: skip

    return Case(["bob", "alice"], "dave", accept_api(report), "so you cannot accept its forgetting report", check)


def path_grow_carry(crew, tmp_path) -> Case:
    """The issue's walk-around: bob's untrained growth carries alice's approved head; neither may alias it."""
    backbone = tiny_backbone(crew.users["erin"], tmp_path)
    original = approved_by(head_row(crew.users["alice"], backbone, task="old-task"), crew.users["erin"])
    job = run_job(
        crew.users["bob"], "grow_backbone", backbone=backbone.pk, insert={"after_layer": "hidden", "kind": "dense"}
    )
    copy = HeadVersion.objects.get(pk=job.result["carried_head_versions"][0])
    # The copy keeps the original's author and records who carried it, from which version, by which job.
    assert (copy.created_by, copy.carried_by, copy.carried_from, copy.job, copy.status) == (
        crew.users["alice"], crew.users["bob"], original, job, APPROVED,
    )  # fmt: skip

    def check():
        assert Alias.objects.get(name="champion").head_id == copy.pk

    return Case(["alice", "bob"], "dave", alias_api(copy), "so you cannot point alias 'champion' at it", check)


def path_fine_tune_accept_carry(crew, tmp_path) -> Case:
    """A copy carried by accepting bob's fine_tune report: alice (its author) and bob may not alias it.

    Dave accepted the report (he carried it as its reviewer, not as an author) and may.
    """
    parent = backbone_row(crew.users["erin"])
    original = approved_by(head_row(crew.users["alice"], parent, task="old-task"), crew.users["erin"])
    job = stored_job(crew.users["bob"], "fine_tune", {"backbone": parent.pk, "dataset": 999, "task": "new"})
    report = report_decide(report=report_for(job, parent, [original]), user=crew.users["dave"], accept=True)
    [copy] = HeadVersion.objects.filter(backbone=report.backbone)
    assert (copy.created_by, copy.carried_by, copy.job) == (crew.users["alice"], crew.users["dave"], job)

    def check():
        assert Alias.objects.get(name="champion").head_id == copy.pk

    return Case(["alice", "bob"], "dave", alias_api(copy), "old-task v2 (head version", check)


def path_branch_fine_tune(crew, tmp_path) -> Case:
    """Bob's fine_tune to a branch registers a head (created_by bob, job recorded); bob may not approve it."""
    from tests.training.helpers import dataset_row_from_file

    backbone = tiny_backbone(crew.users["erin"], tmp_path)
    dataset = dataset_row_from_file(
        crew.users["erin"], mf.make_classification_npz(tmp_path / "train.npz", num_rows=48), name="q"
    )
    params = dict(unfreeze_top=1, warmup_epochs=1, epochs=1, seed=0, output="branch")
    job = run_job(crew.users["bob"], "fine_tune", backbone=backbone.pk, dataset=dataset.pk, task="tuned", **params)
    head = HeadVersion.objects.get(pk=job.result["head_versions"][0])
    assert (head.created_by, head.job, head.branch_blob_id is not None) == (crew.users["bob"], job, True)
    head = head_transition(head=head, user=crew.users["bob"], action="submit")

    def check():
        head.refresh_from_db()
        assert head.status == APPROVED

    return Case(["bob"], "dave", approve_api(head), "You authored tuned v1", check)


def path_retry(crew, tmp_path) -> Case:
    """Alice's failed job retried by carol keeps alice as its requester: neither accepts its report."""
    parent = backbone_row(crew.users["erin"])
    old = approved_by(head_row(crew.users["erin"], parent, task="old-task"), crew.users["bob"])
    params = {"backbone": parent.pk, "widen": {"layer": "hidden", "units": 24}, "train": {"dataset": 999}}
    failed = job_create(team=parent.team, user=crew.users["alice"], spec=job_spec_parse("grow_backbone", params))
    assert failed.status == Job.Status.FAILED  # dataset 999 does not exist: stored failed at once
    response = crew.clients["carol"].post(f"/api/jobs/{failed.pk}/retry/")
    assert response.status_code == 202, response.json()
    retry = Job.objects.get(pk=response.json()["id"])
    assert (retry.created_by, retry.retried_by, retry.retry_of) == (crew.users["alice"], crew.users["carol"], failed)
    assert response.json()["created_by"] == "alice" and response.json()["retried_by"] == "carol"
    Job.objects.filter(pk=retry.pk).update(status=Job.Status.SUCCEEDED, error="")  # as its worker would leave it
    report = report_for(retry, parent, [old])

    def check():
        [copy] = HeadVersion.objects.filter(backbone=report.backbone)
        assert (copy.created_by, copy.carried_by, copy.job) == (crew.users["erin"], crew.users["dave"], retry)

    return Case(["alice", "carol"], "dave", accept_api(report), f"job {retry.pk} (grow_backbone)", check)


def path_import(crew, tmp_path) -> Case:
    """Heads an import registers are its requester's: alice may not approve what she imported."""
    from heads.work.importing import import_run

    backbone = mf.make_backbone(seed=0)
    path = mf.save(mf.make_full_model(backbone, name="imported"), tmp_path / "imported.keras")
    model_import = import_create(
        team=crew.users["alice"].memberships.get().team,
        user=crew.users["alice"],
        backbone_name="tiny",
        feature_layer="features",
        files=[("imported.keras", path)],
        queue=False,
    )
    import_run(import_id=model_import.pk)
    model_import.refresh_from_db()
    assert model_import.status == ModelImport.Status.SUCCEEDED, model_import.error
    head = HeadVersion.objects.get(pk=model_import.report[0]["head_version"])
    assert head.created_by == crew.users["alice"]
    head = head_transition(head=head, user=crew.users["alice"], action="submit")

    def check():
        head.refresh_from_db()
        assert head.status == APPROVED

    return Case(["alice"], "dave", approve_api(head), "You authored imported v1", check)


def admin_form_data(user, obj) -> dict:
    """The POST body of the admin change form of `obj` as a browser sends it unchanged."""
    model_admin = admin.site._registry[type(obj)]
    request = RequestFactory().get("/admin/")
    request.user = user
    form = model_admin.get_form(request, obj, change=True)(instance=obj)
    data = {}

    def put(name, value):
        if value is None or value is False:
            return
        if value is True:
            data[name] = "on"
        elif isinstance(value, datetime.datetime):
            data[f"{name}_0"], data[f"{name}_1"] = value.date().isoformat(), value.time().isoformat()
        else:
            data[name] = value

    for name in form.fields:
        put(name, form[name].value())
    for formset_class, _ in model_admin.get_formsets_with_inlines(request, obj):
        prefix = formset_class.get_default_prefix()
        formset = formset_class(instance=obj, prefix=prefix)
        data.update({f"{prefix}-{key}": value for key, value in formset.management_form.initial.items()})
        for inline_form in formset.forms:
            for name in inline_form.fields:
                put(inline_form.add_prefix(name), inline_form[name].value())
    return data


def admin_change(obj, **changes):
    """Act through the admin's change form (as a logged-in staff user), changing `changes`."""

    def act(crew, name):
        client = Client()
        client.force_login(crew.users[name])
        data = {**admin_form_data(crew.users[name], obj), **changes}
        url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
        response = client.post(url, data)
        if response.status_code == 302:
            return True, ""
        page = response.content.decode()
        assert response.status_code == 200 and "errornote" in page, page[:2000]
        return False, page

    return act


def path_admin_approve(crew, tmp_path) -> Case:
    head = in_review(crew.users["alice"], backbone_row(crew.users["alice"]), "sentiment")

    def check():
        head.refresh_from_db()
        assert head.status == APPROVED
        event = AuditEvent.objects.get(model="heads.HeadVersion", object_id=str(head.pk))
        assert (event.actor, event.action, event.changes) == (
            crew.users["dave"],
            "change",
            {"status": ["in_review", "approved"]},
        )

    return Case(["alice"], "dave", admin_change(head, status=APPROVED), "so you cannot approve it", check)


def path_admin_alias(crew, tmp_path) -> Case:
    backbone = backbone_row(crew.users["alice"])
    first = approved_by(head_row(crew.users["erin"], backbone), crew.users["bob"])
    alias, _ = alias_set(
        user=crew.users["bob"], team=backbone.team, task_slug="sentiment", name="champion", head_id=first.pk
    )
    second = approved_by(head_row(crew.users["alice"], backbone, description="v2"), crew.users["bob"])

    def check():
        alias.refresh_from_db()
        assert (alias.head_id, alias.updated_by) == (second.pk, crew.users["dave"])
        event = AuditEvent.objects.get(model="releases.Alias", object_id=str(alias.pk))
        assert event.changes["head_id"] == [first.pk, second.pk] and event.actor == crew.users["dave"]
        assert AliasMove.objects.filter(alias=alias, to_head=second, actor=crew.users["dave"]).exists()

    return Case(["alice"], "dave", admin_change(alias, head=second.pk), "so you cannot point alias", check)


PATHS = [
    path_approve,
    path_alias_set,
    path_alias_move,
    path_report_accept,
    path_grow_carry,
    path_fine_tune_accept_carry,
    path_branch_fine_tune,
    path_retry,
    path_import,
    path_admin_approve,
    path_admin_alias,
]


@pytest.mark.parametrize("path", PATHS, ids=[p.__name__.removeprefix("path_") for p in PATHS])
def test_every_author_is_refused_and_someone_else_is_allowed(path, people, tmp_path):
    case = path(people, tmp_path)
    for author in case.authors:
        before = db_state()
        allowed, message = case.act(people, author)
        assert not allowed, f"{author} authored this version by provenance but was allowed"
        assert case.refusal in message and "Four eyes" in message, message
        assert db_state() == before, f"{author}'s refused attempt changed the database"
    allowed, message = case.act(people, case.other)
    assert allowed, message
    case.check_allowed()


def test_authors_name_every_way_a_user_authored_a_version(people, tmp_path):
    """The one selector: the creator, the original's creator, the requester and the retrier of the job."""
    from heads.selectors import head_version_authors
    from heads.services import heads_carry

    users = people.users
    parent = backbone_row(users["erin"])
    approved_by(head_row(users["alice"], parent, task="old-task"), users["erin"])
    first = stored_job(users["bob"], "grow_backbone", {"backbone": parent.pk, "widen": {"layer": "hidden", "units": 9}})
    retry = stored_job(
        users["bob"], "grow_backbone", {"backbone": parent.pk, "widen": {"layer": "hidden", "units": 9}},
        retried_by=users["carol"], retry_of=first,
    )  # fmt: skip
    child = backbone_row(users["bob"], parent=parent)
    [copy] = heads_carry(parent=parent, backbone=child, user=users["carol"], reason={"kind": "test"}, job=retry)
    grandchild = backbone_row(users["bob"], parent=child)
    [copy_of_copy] = heads_carry(parent=child, backbone=grandchild, user=users["dave"], reason={"kind": "t"})
    authors = head_version_authors(head=copy_of_copy)
    assert set(authors) == {users["alice"].pk, users["bob"].pk, users["carol"].pk, users["dave"].pk}
    assert authors[users["alice"].pk][0].startswith(f"authored old-task v3 (head version {copy_of_copy.pk})")
    assert any(f"retried job {retry.pk} (grow_backbone)" in how for how in authors[users["carol"].pk])
    assert any(f"requested job {first.pk} (grow_backbone)" in how for how in authors[users["bob"].pk])
    assert authors[users["dave"].pk] == [f"carried old-task v3 (head version {copy_of_copy.pk})"]  # no job recorded
    assert users["erin"].pk not in authors  # erin reviewed the original: a reviewer is not an author


def test_admin_audits_add_change_and_delete_and_keeps_authorship_read_only(people):
    """Every admin change to a job or report is an AuditEvent; authorship fields are not in the form."""
    users = people.users
    parent = backbone_row(users["erin"])
    job = stored_job(users["bob"], "grow_backbone", {"backbone": parent.pk, "widen": {"layer": "hidden", "units": 9}})
    report = report_for(job, parent, [])
    request = RequestFactory().get("/admin/")
    request.user = users["dave"]
    for obj, authorship in (
        (job, {"created_by", "retried_by", "retry_of"}),
        (report, {"reviewed_by", "reviewed_at", "job", "status"}),
        (head_row(users["alice"], parent), {"created_by", "reviewed_by", "carried_by", "carried_from", "job"}),
    ):
        model_admin = admin.site._registry[type(obj)]
        assert authorship <= set(model_admin.get_readonly_fields(request, obj))
        assert not authorship & set(model_admin.get_form(request, obj, change=True).base_fields)
    client = Client()
    client.force_login(users["dave"])
    url = reverse("admin:training_job_change", args=[job.pk])
    response = client.post(
        url, {**admin_form_data(users["dave"], job), "log": "edited by hand", "created_by": users["dave"].pk}
    )
    assert response.status_code == 302
    job.refresh_from_db()
    assert (job.log, job.created_by) == ("edited by hand", users["bob"])  # the posted created_by was ignored
    event = AuditEvent.objects.get(model="training.Job", action="change")
    assert event.changes == {"log": ["", "edited by hand"]} and event.actor == users["dave"]
    assert (
        client.post(reverse("admin:training_forgettingreport_delete", args=[report.pk]), {"post": "yes"}).status_code
        == 302
    )
    deleted = AuditEvent.objects.get(model="training.ForgettingReport", action="delete")
    assert deleted.object_id == str(report.pk) and deleted.changes["job_id"] == [job.pk, None]
    assert not ForgettingReport.objects.filter(pk=report.pk).exists()
