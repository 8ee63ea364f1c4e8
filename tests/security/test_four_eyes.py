"""Four eyes everywhere: nobody accepts the forgetting report of their own job; admin edits are audited."""

import pytest
from django.test import RequestFactory

from core.models import AuditEvent
from heads.models import HeadEvent, HeadVersion
from tests.view_helpers import backbone_row, head_row, report_setup
from training.models import ForgettingReport

pytestmark = pytest.mark.django_db


def test_a_reviewer_cannot_accept_the_report_of_their_own_job(make_member):
    from rest_framework.test import APIClient

    rita, token = make_member("rita", team="vision", role="reviewer")
    report, child = report_setup(rita, make_member)  # rita started the job
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    refused = client.post(f"/api/forgetting-reports/{report.pk}/accept/")
    assert refused.status_code == 403
    assert f"You started job {report.job_id}" in refused.json()["error"]["message"]
    assert ForgettingReport.objects.get(pk=report.pk).status == "pending"
    assert not HeadVersion.objects.filter(backbone=child).exists()  # nothing carried
    # Another reviewer may accept it; the author may still reject.
    _, other = make_member("sam", team="vision", role="reviewer")
    second = APIClient()
    second.credentials(HTTP_AUTHORIZATION=f"Token {other}")
    assert second.post(f"/api/forgetting-reports/{report.pk}/accept/").status_code == 200


def test_status_edits_in_the_admin_write_an_audit_event(make_member):
    from django.contrib import admin

    superuser, _ = make_member("root", team="vision", role="admin")
    superuser.is_staff = superuser.is_superuser = True
    superuser.save()
    author, _ = make_member("ann", team="vision")  # not root: an author may not approve, in the admin neither
    head = head_row(author, backbone_row(author), task="t", status=HeadVersion.Status.DRAFT)
    model_admin = admin.site._registry[HeadVersion]
    request = RequestFactory().post("/admin/")
    request.user = superuser
    head.status = HeadVersion.Status.APPROVED  # skipping review: exactly what must leave a trace
    model_admin.save_model(request, head, form=None, change=True)
    event = AuditEvent.objects.get(model="heads.HeadVersion", object_id=str(head.pk))
    assert (event.field, event.old_value, event.new_value, event.actor) == ("status", "draft", "approved", superuser)
    history = HeadEvent.objects.get(head=head, action=HeadEvent.Action.ADMIN_EDIT)
    assert (history.old_status, history.new_status, history.actor) == ("draft", "approved", superuser)
    # An edit that leaves the status alone is not an event.
    model_admin.save_model(request, head, form=None, change=True)
    assert AuditEvent.objects.count() == 1
