"""The review workflow: permission matrix, transitions, concurrent approvals, comments, history."""

import threading

import pytest
from rest_framework.test import APIClient

from heads.models import HeadVersion
from tests.registry_helpers import ready_backbone, settled_head

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def draft_head(api_client_for, model_files, celery_worker):
    author = api_client_for("alice", role="member")
    backbone = ready_backbone(author, model_files["backbone"])
    head = settled_head(author, model_files["head"], backbone=backbone["id"], task="sentiment")
    assert head["status"] == "draft"
    return author, head


def test_permission_matrix(api_client_for, draft_head):
    author, head = draft_head
    url = f"/api/heads/{head['id']}"
    member = api_client_for("mo", role="member")
    reviewer = api_client_for("rita", role="reviewer")
    outsider = api_client_for("mallory", team="audio", role="admin")
    assert outsider.get(f"{url}/").status_code == 404
    assert outsider.post(f"{url}/submit/").status_code == 404

    assert member.post(f"{url}/submit/").status_code == 200  # any member may submit
    forbidden = member.post(f"{url}/approve/")
    assert forbidden.status_code == 403 and "Only reviewers" in forbidden.json()["error"]["message"]

    author_reviewer = api_client_for("alice", role="reviewer")  # the author becomes a reviewer
    own = author_reviewer.post(f"{url}/approve/")
    assert own.status_code == 403 and "authored" in own.json()["error"]["message"]
    assert HeadVersion.objects.get(pk=head["id"]).status == "in_review"

    approved = reviewer.post(f"{url}/approve/", {"comment": "LGTM"}, format="json")
    assert approved.status_code == 200
    assert approved.json()["status"] == "approved"
    assert approved.json()["review"]["reviewed_by"] == "rita"


def test_transition_not_allowed_is_409_naming_current_status(api_client_for, draft_head):
    _, head = draft_head
    reviewer = api_client_for("rita", role="reviewer")
    response = reviewer.post(f"/api/heads/{head['id']}/approve/")
    assert response.status_code == 409
    assert "'draft'" in response.json()["error"]["message"]
    assert response.json()["error"]["detail"] == {"current_status": "draft"}


def test_request_changes_then_resubmit_then_archive(api_client_for, draft_head):
    author, head = draft_head
    url = f"/api/heads/{head['id']}"
    reviewer = api_client_for("rita", role="reviewer")
    assert author.post(f"{url}/submit/").json()["status"] == "in_review"
    changes = reviewer.post(f"{url}/request_changes/", {"comment": "Needs **more** data"}, format="json")
    assert changes.json()["status"] == "changes_requested"
    assert author.post(f"{url}/submit/").json()["status"] == "in_review"
    assert author.post(f"{url}/archive/").json()["status"] == "archived"
    assert author.post(f"{url}/submit/").status_code == 409


def test_two_reviewers_approving_at_once_exactly_one_wins(api_client_for, make_member, draft_head):
    author, head = draft_head
    author.post(f"/api/heads/{head['id']}/submit/")
    clients = []
    for name in ("rev1", "rev2", "rev3"):
        _, token = make_member(name, role="reviewer")
        clients.append(APIClient(HTTP_AUTHORIZATION=f"Token {token}"))
    barrier = threading.Barrier(len(clients))
    results = []

    def approve(client):
        from django.db import connection

        barrier.wait()
        try:
            results.append(client.post(f"/api/heads/{head['id']}/approve/").status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=approve, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [200, 409, 409]
    events = author.get(f"/api/heads/{head['id']}/history/").json()["results"]
    assert [e["action"] for e in events].count("approve") == 1


def test_comments_and_history_record_who_did_what(api_client_for, draft_head):
    author, head = draft_head
    url = f"/api/heads/{head['id']}"
    reviewer = api_client_for("rita", role="reviewer")
    posted = author.post(f"{url}/comments/", {"body": "Trained on *v3* data"}, format="json")
    assert posted.status_code == 201
    assert author.post(f"{url}/comments/", {"body": "   "}, format="json").status_code == 400
    author.post(f"{url}/submit/")
    reviewer.post(f"{url}/approve/", {"comment": "ship it"}, format="json")
    comments = author.get(f"{url}/comments/").json()["results"]
    assert [(c["author"], c["body"]) for c in comments] == [("alice", "Trained on *v3* data"), ("rita", "ship it")]
    history = author.get(f"{url}/history/").json()["results"]
    assert [(e["action"], e["actor"], e["old_status"], e["new_status"]) for e in history] == [
        ("upload", "alice", "", "validating"),
        ("validated", None, "validating", "draft"),
        ("comment", "alice", "draft", "draft"),
        ("submit", "alice", "draft", "in_review"),
        ("approve", "rita", "in_review", "approved"),
    ]
    assert all(e["created_at"] for e in history)


def test_list_filters(api_client_for, draft_head):
    author, head = draft_head
    assert author.get("/api/heads/?status=draft").json()["count"] == 1
    assert author.get("/api/heads/?status=approved").json()["count"] == 0
    assert author.get(f"/api/heads/?backbone={head['backbone']}&task=sentiment").json()["count"] == 1
    assert author.get("/api/heads/?q=sentim").json()["count"] == 1
    assert author.get("/api/heads/?q=zzz").json()["count"] == 0
