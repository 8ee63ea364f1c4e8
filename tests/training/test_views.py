"""Training dashboard pages with Django's test client (no worker): team scoping, job forms that
offer only compatible datasets and backbones and build the API's params, cancel and retry,
forgetting report decisions, the lineage tree and the dataset page."""

import re

import pytest

from backbones.models import BackboneVersion
from heads.models import HeadVersion
from tests.training.helpers import dataset_row
from tests.view_helpers import SPEC, backbone_row, head_row, report_setup
from training.models import Dataset, ForgettingReport, Job
from training.services import job_create
from training.specs import job_spec_parse

pytestmark = pytest.mark.django_db

IMAGE_SPEC = {**SPEC, "inputs": [{"name": "image", "shape": [32, 32, 3], "dtype": "float32"}]}


@pytest.fixture
def alice(make_member):
    return make_member("alice", team="vision", role="member")[0]


@pytest.fixture
def backbone(alice):
    return backbone_row(alice)


@pytest.fixture
def dataset(alice):
    return dataset_row(alice, name="quadrants")


def train_head_job(user, backbone, dataset, **params) -> Job:
    params = {"backbone": backbone.pk, "dataset": dataset.pk, "task": "quadrant", "head": {"type": "dense"}, **params}
    return job_create(team=backbone.team, user=user, spec=job_spec_parse(Job.Kind.TRAIN_HEAD, params))


def test_other_teams_pages_are_404(client, alice, make_member):
    mallory, _ = make_member("mallory", team="audio", role="admin")
    foreign_backbone = backbone_row(mallory, team="audio", name="speechnet")
    foreign_dataset = dataset_row(mallory, team="audio", name="speech")
    foreign_job = train_head_job(mallory, foreign_backbone, foreign_dataset)
    foreign_report = ForgettingReport.objects.create(
        job=foreign_job, parent=foreign_backbone, backbone=backbone_row(mallory, team="audio", parent=foreign_backbone)
    )
    client.force_login(alice)
    assert client.get(f"/datasets/{foreign_dataset.pk}/").status_code == 404
    assert client.get(f"/jobs/{foreign_job.pk}/").status_code == 404
    assert client.post(f"/jobs/{foreign_job.pk}/cancel/").status_code == 404
    assert client.post(f"/jobs/{foreign_job.pk}/retry/").status_code == 404
    assert client.get(f"/forgetting-reports/{foreign_report.pk}/").status_code == 404
    assert client.post(f"/forgetting-reports/{foreign_report.pk}/accept/").status_code == 404
    assert client.get(f"/lineage/{foreign_backbone.pk}/").status_code == 404
    assert Job.objects.get(pk=foreign_job.pk).status == Job.Status.QUEUED
    assert ForgettingReport.objects.get(pk=foreign_report.pk).status == ForgettingReport.Status.PENDING
    assert "speech" not in client.get("/datasets/").content.decode()
    assert f"#{foreign_job.pk}<" not in client.get("/jobs/").content.decode()


def test_pages_need_login(client, backbone, dataset):
    for url in ("/jobs/", "/jobs/new/", "/datasets/", f"/datasets/{dataset.pk}/", f"/lineage/{backbone.pk}/"):
        response = client.get(url)
        assert response.status_code == 302 and "/login/" in response["Location"], url


def test_job_forms_list_only_compatible_ready_datasets_and_backbones(client, alice, make_member, backbone, dataset):
    dataset_row(alice, name="wrong-shape", input_shape=(5,))
    dataset_row(alice, name="still-validating", status=Dataset.Status.VALIDATING)
    dataset_row(alice, name="photos", fmt=Dataset.Format.IMAGES)
    image_backbone = backbone_row(alice, name="convnet")
    BackboneVersion.objects.filter(pk=image_backbone.pk).update(spec=IMAGE_SPEC)
    backbone_row(alice, name="broken", status=BackboneVersion.Status.REJECTED)
    lonely = backbone_row(alice, name="lonely")
    BackboneVersion.objects.filter(pk=lonely.pk).update(spec={**SPEC, "inputs": [{"name": "x", "shape": [99]}]})
    mallory, _ = make_member("mallory", team="audio")
    dataset_row(mallory, team="audio", name="foreign-data")
    backbone_row(mallory, team="audio", name="foreign-net")
    client.force_login(alice)

    for kind in ("train_head", "train_heads", "fine_tune"):
        page = client.get(f"/jobs/new/?kind={kind}").content.decode()
        assert "quadrants (#" in page and "photos (#" in page, kind
        for absent in ("wrong-shape", "still-validating", "foreign-data", "foreign-net", "broken v1", "lonely v1"):
            assert absent not in page, (kind, absent)
        assert "tiny v1" in page and "convnet v1" in page
        # Each dataset option names the backbones it fits, for the client-side filter.
        assert f'data-backbones="{backbone.pk}"' in page and f'data-backbones="{image_backbone.pk}"' in page

    grow = client.get("/jobs/new/?kind=grow_backbone").content.decode()
    assert "lonely v1" in grow  # growing without training needs no dataset
    assert "broken v1" not in grow and "foreign-net" not in grow and "wrong-shape" not in grow
    assert '<option value="hidden"' in grow and '<option value="features"' in grow


def test_job_form_without_anything_to_train_on_says_so(client, alice):
    client.force_login(alice)
    page = client.get("/jobs/new/?kind=train_head").content.decode()
    assert "Nothing to train on yet" in page and 'id="job-form"' not in page


def test_posting_the_train_head_form_creates_a_queued_job_with_api_params(client, alice, backbone, dataset):
    client.force_login(alice)
    response = client.post(
        "/jobs/new/?kind=train_head",
        {
            "backbone": backbone.pk,
            "dataset": dataset.pk,
            "task": "quadrant",
            "head_type": "mlp",
            "hidden": "16, 8",
            "dropout": "0.1",
            "epochs": "8",
            "batch_size": "16",
            "learning_rate": "0.05",
            "early_stopping": "3",
        },
    )
    job = Job.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
    assert (job.kind, job.status, job.created_by, job.team.slug) == ("train_head", "queued", alice, "vision")
    params = job.params
    assert (params["backbone"], params["dataset"], params["task"]) == (backbone.pk, dataset.pk, "quadrant")
    assert (params["epochs"], params["batch_size"], params["learning_rate"]) == (8, 16, 0.05)
    assert params["early_stopping"] == {"patience": 3}
    assert params["head"]["type"] == "mlp" and params["head"]["hidden"] == [16, 8] and params["head"]["dropout"] == 0.1
    page = client.get(response["Location"]).content.decode()
    assert "queued" in page and 'id="btn-cancel"' in page and f"/api/jobs/{job.pk}/" in page


def test_train_heads_form_ignores_blank_rows_and_grow_form_builds_insert(client, alice, backbone, dataset):
    other = dataset_row(alice, name="second", x_sha256="x-quadrants")
    client.force_login(alice)
    rows = {f"head_type_{i}": "dense" for i in range(4)}
    rows.update(task_0="a", dataset_0=dataset.pk, lr_0="0.01", task_1="b", dataset_1=other.pk, lr_1="0.05")
    rows.update(head_type_1="mlp", hidden_1="8")
    client.post(
        "/jobs/new/?kind=train_heads",
        {"backbone": backbone.pk, "mode": "disjoint", "epochs": 3, "batch_size": 32, **rows},
    )
    job = Job.objects.get(kind="train_heads")
    assert job.status == "queued", job.error
    assert [(t["task"], t["dataset"], t["head"]["type"], t["learning_rate"]) for t in job.params["tasks"]] == [
        ("a", dataset.pk, "dense", 0.01),
        ("b", other.pk, "mlp", 0.05),
    ]
    assert job.params["tasks"][1]["head"]["hidden"] == [8] and job.params["mode"] == "disjoint"

    client.post(
        "/jobs/new/?kind=grow_backbone",
        {"backbone": backbone.pk, "change": "insert", "layer": "hidden", "insert_kind": "residual", "units": ""},
    )
    grow = Job.objects.get(kind="grow_backbone")
    assert grow.status == "queued", grow.error
    assert grow.params["insert"] == {"after_layer": "hidden", "kind": "residual"} and "train" not in grow.params


def test_fine_tune_form_offers_the_branch_output(client, alice, backbone, dataset):
    client.force_login(alice)
    page = client.get("/jobs/new/?kind=fine_tune").content.decode()
    assert re.search(r'name="output" value="backbone"[^>]*checked', page)  # the default: today's behaviour
    assert re.search(r'name="output" value="branch"', page)
    fields = {"backbone": backbone.pk, "dataset": dataset.pk, "task": "tuned", "head_type": "dense"}
    fields.update(unfreeze_top=1, warmup_epochs=1, epochs=1, batch_size=16, learning_rate=0.01, finetune_lr_factor=0.1)
    response = client.post("/jobs/new/?kind=fine_tune", {**fields, "output": "branch"})
    job = Job.objects.get(kind="fine_tune")
    assert response.status_code == 302 and job.status == "queued", job.error
    assert job.params["output"] == "branch"
    refused = client.post("/jobs/new/?kind=fine_tune", {**fields, "output": "nonsense"})
    assert refused.status_code == 200 and Job.objects.count() == 1
    assert "Select a valid choice" in refused.content.decode()


def test_a_job_failing_the_cheap_checks_shows_its_error(client, alice, backbone, dataset):
    Dataset.objects.filter(pk=dataset.pk).update(num_validation=0)
    client.force_login(alice)
    response = client.post(
        "/jobs/new/?kind=train_head",
        {"backbone": backbone.pk, "dataset": dataset.pk, "task": "quadrant", "head_type": "dense", "epochs": 2,
         "batch_size": 8, "learning_rate": 0.01, "early_stopping": 2},
        follow=True,
    )  # fmt: skip
    job = Job.objects.get()
    assert job.status == "failed"
    page = response.content.decode()
    assert "has no validation split" in page and "failed its checks" in page
    assert 'id="retry-form" hidden' not in page and 'id="cancel-form" hidden' in page


def test_malformed_form_input_shows_the_specs_error_on_its_field_and_stores_nothing(client, alice, backbone, dataset):
    client.force_login(alice)
    page = client.post(
        "/jobs/new/?kind=train_head",
        {"backbone": backbone.pk, "dataset": dataset.pk, "task": "Bad Slug", "head_type": "mlp", "hidden": "0, 8",
         "dropout": "1.5", "epochs": 100000, "batch_size": 8, "learning_rate": 0.01},
    ).content.decode()  # fmt: skip
    assert Job.objects.count() == 0
    fields = {name: block for name, block in _field_blocks(page).items()}
    assert "Invalid task slug" in fields["task"]
    assert "must be a number in [0, 1); got 1.5" in fields["dropout"]
    assert "each entry must be a whole number in [1, 8192]" in fields["hidden"]
    assert "MODELHUB_MAX_EPOCHS" in fields["epochs"]


def test_job_forms_take_defaults_and_bounds_from_the_specs(client, alice, backbone, dataset):
    client.force_login(alice)
    page = client.get("/jobs/new/?kind=train_head").content.decode()
    assert 'name="epochs" value="5" min="1" max="1000"' in page
    assert 'name="batch_size" value="32" min="1" max="65536"' in page
    fine = client.get("/jobs/new/?kind=fine_tune").content.decode()
    assert 'name="unfreeze_top" value="1" min="1"' in fine and 'name="warmup_epochs" value="2" min="0"' in fine


def _field_blocks(page: str) -> dict[str, str]:
    """The HTML of each form field's block (label, input, errors), by field name."""
    blocks = {}
    for chunk in page.split('<div class="field')[1:]:
        name = chunk.split('name="', 1)[1].split('"', 1)[0] if 'name="' in chunk else ""
        blocks[name] = chunk.split("</div>", 1)[0]
    return blocks


def test_jobs_stored_with_bad_params_do_not_break_any_page(client, alice, backbone, dataset):
    bad = Job.objects.create(
        team=backbone.team, kind="train_head", params={"backbone": "abc", "head": 3}, created_by=alice,
        status=Job.Status.FAILED, error="old",
    )  # fmt: skip
    odd = [
        {"backbone": [1], "dataset": "x", "tasks": "abc", "train": 5, "insert": "y"},
        {"tasks": [1, {"dataset": True, "task": 3}], "widen": {"layer": 7}},
        ["not", "an", "object"],
        "text",
    ]
    for params in odd:
        Job.objects.create(team=backbone.team, kind="train_heads", params=params, created_by=alice, status="failed")
    client.force_login(alice)
    for url in ("/datasets/", f"/datasets/{dataset.pk}/", "/jobs/", f"/jobs/{bad.pk}/", f"/lineage/{backbone.pk}/"):
        assert client.get(url).status_code == 200, url
    for job in Job.objects.all():
        assert client.get(f"/jobs/{job.pk}/").status_code == 200, job.params
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(alice)
    assert api.get("/api/jobs/").status_code == 200
    assert api.get(f"/api/jobs/{bad.pk}/").json()["params"] == {"backbone": "abc", "head": 3}
    retried = api.post(f"/api/jobs/{bad.pk}/retry/")
    assert retried.status_code == 400 and "backbone" in retried.json()["error"]["detail"]
    assert "cannot be retried" in client.post(f"/jobs/{bad.pk}/retry/", follow=True).content.decode()
    assert Job.objects.count() == 1 + len(odd)


def test_cancel_and_retry_buttons(client, alice, backbone, dataset):
    job = train_head_job(alice, backbone, dataset)
    client.force_login(alice)
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert 'id="btn-cancel"' in page and 'id="retry-form" hidden' in page

    response = client.post(f"/jobs/{job.pk}/cancel/", follow=True)
    job.refresh_from_db()
    assert job.status == "cancelled" and job.cancel_requested
    assert f"Cancelled job {job.pk}." in response.content.decode()
    again = client.post(f"/jobs/{job.pk}/cancel/", follow=True).content.decode()
    assert "only queued or running jobs can be cancelled" in again

    response = client.post(f"/jobs/{job.pk}/retry/")
    retry = Job.objects.exclude(pk=job.pk).get()
    assert response["Location"] == f"/jobs/{retry.pk}/"
    assert (retry.status, retry.retry_of_id, retry.params["task"]) == ("queued", job.pk, "quadrant")
    refused = client.post(f"/jobs/{retry.pk}/retry/", follow=True).content.decode()
    assert "only failed or cancelled jobs can be retried" in refused
    assert client.get(f"/jobs/{job.pk}/cancel/").status_code == 405


def test_job_page_shows_metrics_log_and_result_links(client, alice, backbone, dataset):
    job = train_head_job(alice, backbone, dataset)
    head = head_row(alice, backbone, task="quadrant")
    metrics = [{"epoch": e, "loss": 1.0 / e, "val_loss": 1.2 / e, "accuracy": 0.5 + e / 10} for e in (1, 2)]
    Job.objects.filter(pk=job.pk).update(
        status=Job.Status.SUCCEEDED,
        metrics=metrics,
        progress={"epoch": 2, "epochs": 2, "step": 0, "steps": 5, "eta_s": 0},
        log="[10:00:00] epoch 2/2: loss=0.5000\n",
        result={"head_versions": [head.pk]},
    )
    client.force_login(alice)
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert f'href="/heads/{head.pk}/"' in page and "quadrant v1" in page
    assert '"val_loss": 0.6' in page  # the job's JSON for the charts
    assert "epoch 2/2: loss=0.5000" in page
    assert 'id="chart-loss"' in page and 'id="chart-accuracy"' in page
    assert 'id="cancel-form" hidden' in page and 'id="retry-form" hidden' in page
    listing = client.get("/jobs/").content.decode()
    assert f'href="/jobs/{job.pk}/"' in listing and "badge-succeeded" in listing and 'data-width="100"' in listing


def test_report_accept_by_a_reviewer_carries_heads_and_is_refused_for_a_member(client, alice, make_member):
    report, child = report_setup(alice, make_member)
    client.force_login(alice)
    page = client.get(f"/forgetting-reports/{report.pk}/").content.decode()
    assert "old-task" in page and "0.9000" in page and "0.7500" in page and "-0.1500" in page
    assert 'class="delta-neg"' in page and 'id="btn-accept"' not in page and "Waiting for a reviewer" in page
    refused = client.post(f"/forgetting-reports/{report.pk}/accept/", follow=True).content.decode()
    assert "Only reviewers and admins" in refused
    assert ForgettingReport.objects.get(pk=report.pk).status == "pending"
    assert f"/forgetting-reports/{report.pk}/" in client.get(f"/jobs/{report.job_id}/").content.decode()

    rita, _ = make_member("rita", team="vision", role="reviewer")
    client.force_login(rita)
    assert 'id="btn-accept"' in client.get(f"/forgetting-reports/{report.pk}/").content.decode()
    accepted = client.post(f"/forgetting-reports/{report.pk}/accept/", follow=True).content.decode()
    assert "Accepted." in accepted
    report.refresh_from_db()
    assert (report.status, report.reviewed_by) == ("accepted", rita)
    carried = HeadVersion.objects.filter(backbone=child)
    assert [(h.task.slug, h.status) for h in carried] == [("old-task", "approved")]
    twice = client.post(f"/forgetting-reports/{report.pk}/reject/", follow=True).content.decode()
    assert "already &#x27;accepted&#x27;" in twice or "already 'accepted'" in twice


def test_lineage_page_shows_the_family_tree_with_origins(client, alice):
    root = backbone_row(alice)
    grown = backbone_row(alice, parent=root)
    BackboneVersion.objects.filter(pk=grown.pk).update(
        origin={"kind": "grow", "change": {"after_layer": "hidden", "kind": "dense"}, "job": 7,
                "verification": {"max_abs_diff": 3.2e-7, "relative_diff": 1e-7}, "trained": False},
    )  # fmt: skip
    tuned = backbone_row(alice, parent=grown)
    BackboneVersion.objects.filter(pk=tuned.pk).update(origin={"kind": "fine_tune", "unfreeze_top": 1})
    unrelated = backbone_row(alice, name="other")
    client.force_login(alice)

    page = client.get(f"/lineage/{grown.pk}/").content.decode()
    tree = page.split('id="lineage-tree"', 1)[1].split("</section>", 1)[0]
    assert f'href="/backbones/{root.pk}/"' in tree and f'href="/backbones/{tuned.pk}/"' in tree
    assert tree.index(f'data-version="{root.pk}"') < tree.index(f'data-version="{grown.pk}"')
    assert tree.index(f'data-version="{grown.pk}"') < tree.index(f'data-version="{tuned.pk}"')
    assert "insert dense after hidden" in tree and "3.20e-07" in tree and "fine tune" in tree and "upload" in tree
    assert f'data-version="{unrelated.pk}"' not in tree
    assert "Lineage of tiny v1" in page  # the root of the family, even when opened from a child
    assert f"/lineage/{root.pk}/" in client.get(f"/backbones/{root.pk}/").content.decode()


def test_dataset_pages_and_upload_form(client, alice, dataset):
    dataset_row(alice, name="rejected-one", status=Dataset.Status.REJECTED, error="y has NaN values.")
    client.force_login(alice)
    listing = client.get("/datasets/").content.decode()
    assert "quadrants" in listing and "rejected-one" in listing and "badge-rejected" in listing
    page = client.get(f"/datasets/{dataset.pk}/").content.decode()
    assert "cat" in page and "bird" in page and "(8,)" in page and "180" in page
    assert 'class="hbar-fill" data-width="100.0"' in page and 'data-width="71.4"' in page
    rejected = Dataset.objects.get(name="rejected-one")
    assert "y has NaN values." in client.get(f"/datasets/{rejected.pk}/").content.decode()
    bad = client.post("/datasets/upload/", {"name": "x", "file": _upload("notes.txt", b"hello")}).content.decode()
    assert "Expected a .npz" in bad


def _upload(name: str, data: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data)
