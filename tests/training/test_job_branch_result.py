"""The job page's results for a fine_tune to a branch (issue 10), with Django's test client (no
worker): the branch, the worker's note, no backbone version and a link to the head that owns the
branch; a fine_tune to a backbone still shows its backbone and report and no branch."""

import html
import re

import pytest

from artifacts.services import blob_store_bytes
from heads.models import HeadVersion
from tests.training.helpers import dataset_row
from tests.view_helpers import backbone_row, head_row
from training.models import ForgettingReport, Job
from training.services import job_create
from training.specs import job_spec_parse

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(make_member):
    return make_member("alice", team="vision", role="member")[0]


def fine_tune_job(user, backbone, dataset, *, output: str) -> Job:
    params = {"backbone": backbone.pk, "dataset": dataset.pk, "task": "tuned", "head": {"type": "dense"}}
    job = job_create(
        team=backbone.team, user=user, spec=job_spec_parse(Job.Kind.FINE_TUNE, {**params, "output": output})
    )
    assert job.status == Job.Status.QUEUED, job.error
    return job


def results_text(page: str) -> str:
    card = page.split('id="job-results">', 1)[1].split("</section>", 1)[0]
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", card)).split())


def test_a_fine_tune_to_a_branch_shows_the_branch_the_note_and_no_backbone_version(client, alice):
    parent = backbone_row(alice)
    job = fine_tune_job(alice, parent, dataset_row(alice), output="branch")
    branch = {"after_layer": "hidden", "layers": ["features"], "params": 78}
    head = head_row(alice, parent, task="tuned", branch_blob=blob_store_bytes(data=b"tuned branch").blob, branch=branch)
    note = (
        f"No backbone version was created and no forgetting report is needed: the trunk every other head of "
        f"{parent.label} uses did not change. Head 'tuned' v1 owns the backbone's layers after 'hidden' as its "
        f"branch (1 layers, 78 params; the top 1 weight-bearing ones trained)."
    )
    result = {
        "backbone_version": None,
        "head_versions": [head.pk],
        "forgetting_report": None,
        "branch": branch,
        "verification": {"max_abs_diff": 2.5e-7, "max_rel_diff": 1.25e-7, "tolerance": 1e-5, "num_probe_rows": 8},
        "note": note,
    }
    Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCEEDED, result=result)
    client.force_login(alice)
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    shown = results_text(page)
    assert "branch after hidden : 1 layer, 78 params, owned by tuned v1" in shown
    assert f'href="/heads/{head.pk}/" data-result="branch-head"' in page
    assert f'href="/heads/{head.pk}/" data-result="head"' in page
    assert 'id="no-backbone"' in page
    assert (
        f"backbone none created · the tuned layers live in the head's branch; {parent.name} v{parent.version} and "
        "the trunk its other heads use are unchanged, so there is no forgetting report"
    ) in shown
    assert (
        "Parent trunk + branch + head give the tuned model's outputs on 8 probe rows: max abs diff 2.50e-07 , "
        "relative 1.25e-07"
    ) in shown
    assert "Function preserved" not in shown
    assert note in shown
    assert 'data-result="backbone"' not in page and 'id="report-link"' not in page


def test_a_fine_tune_to_a_backbone_shows_no_branch(client, alice):
    parent = backbone_row(alice)
    job = fine_tune_job(alice, parent, dataset_row(alice), output="backbone")
    child = backbone_row(alice, parent=parent)
    head = head_row(alice, child, task="tuned")
    report = ForgettingReport.objects.create(job=job, parent=parent, backbone=child)
    result = {"backbone_version": child.pk, "head_versions": [head.pk], "forgetting_report": report.pk}
    Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCEEDED, result=result)
    client.force_login(alice)
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert f'href="/backbones/{child.pk}/" data-result="backbone"' in page and 'id="report-link"' in page
    assert 'id="job-branch"' not in page and 'id="no-backbone"' not in page and 'id="job-note"' not in page
    assert HeadVersion.objects.get(pk=head.pk).branch is None
