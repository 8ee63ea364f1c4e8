"""Aliases through the HTTP API with a real worker: who may move them, onto what, their history,
archiving blocked by an alias, assemblies by alias, and the alias.moved webhook."""

import json

import pytest

from tests.conftest import wait_until
from tests.registry_helpers import import_and_approve, wait_status
from tests.releases.conftest import verified

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def team(api_client_for, model_files, celery_worker):
    """Three approved heads (sentiment, topic, box) authored by reviewer 'ava', approved by 'rita'."""
    clients = {
        "ava": api_client_for("ava", role="reviewer"),
        "rita": api_client_for("rita", role="reviewer"),
        "mo": api_client_for("mo", role="member"),
        "adam": api_client_for("adam", role="admin"),
    }
    imported = import_and_approve(clients["ava"], clients["rita"], model_files)
    heads = {entry["task"]: entry["head_version"] for entry in imported["report"]}
    return clients, heads, imported["backbone"]


def _set(client, task: str, head: int, *, name: str = "champion", comment: str = ""):
    body = {"team": "vision", "task": task, "name": name, "head": head, "comment": comment}
    return client.post("/api/aliases/", body, format="json")


def _new_approved_version(head_id: int, *, author: str = "ava") -> int:
    """Register another approved version of the head's task (same artifact), as a carry would."""
    from django.contrib.auth import get_user_model

    from heads.models import HeadVersion
    from heads.services import head_version_create

    head = HeadVersion.objects.get(pk=head_id)
    user = get_user_model().objects.get(username=author)
    return head_version_create(
        task=head.task, backbone=head.backbone, blob=head.blob, user=user, status=HeadVersion.Status.APPROVED
    ).pk


def test_alias_rules_history_and_archive(team):
    clients, heads, _ = team
    ava, rita, mo, adam = (clients[name] for name in ("ava", "rita", "mo", "adam"))
    sentiment = heads["sentiment"]

    # Members may not; a reviewer may never alias a version they authored; nothing is stored.
    response = _set(mo, "sentiment", sentiment)
    assert response.status_code == 403 and "reviewers and admins" in response.json()["error"]["message"]
    response = _set(ava, "sentiment", sentiment)
    assert response.status_code == 403 and "You authored" in response.json()["error"]["message"]
    assert rita.get("/api/aliases/?team=vision").json()["count"] == 0

    created = _set(rita, "sentiment", sentiment, comment="best on the A/B test")
    assert created.status_code == 201, created.json()
    alias = created.json()
    assert (alias["task"], alias["name"], alias["head"], alias["updated_by"]) == (
        "sentiment",
        "champion",
        sentiment,
        "rita",
    )
    assert _set(rita, "sentiment", sentiment).status_code == 200  # already there: no new history entry
    assert [row["id"] for row in mo.get("/api/aliases/").json()["results"]] == [alias["id"]]  # all my teams

    # Bad names, wrong tasks and unknown versions are 400s.
    assert _set(rita, "sentiment", sentiment, name="Champion!").status_code == 400
    assert _set(rita, "topic", sentiment).status_code == 400
    assert _set(rita, "sentiment", 999999).status_code == 400

    # Archiving the version an alias points to: 409 naming the alias.
    response = ava.post(f"/api/heads/{sentiment}/archive/")
    assert response.status_code == 409, response.json()
    assert "'champion'" in response.json()["error"]["message"]
    assert response.json()["error"]["detail"] == {"aliases": ["champion"]}
    assert ava.get(f"/api/heads/{sentiment}/").json()["status"] == "approved"

    # Only approved versions: an archived one is refused with 409.
    topic = heads["topic"]
    assert ava.post(f"/api/heads/{topic}/archive/").status_code == 200
    response = _set(rita, "topic", topic)
    assert response.status_code == 409 and response.json()["error"]["detail"]["current_status"] == "archived"

    # Move onto a newer version (an admin may too), then delete; the history keeps it all.
    newer = _new_approved_version(sentiment)
    moved = _set(adam, "sentiment", newer, comment="v2 wins")
    assert moved.status_code == 201 and moved.json()["id"] == alias["id"] and moved.json()["head"] == newer
    assert ava.post(f"/api/heads/{sentiment}/archive/").status_code == 200  # nothing points at it now
    assert mo.delete(f"/api/aliases/{alias['id']}/").status_code == 403
    assert rita.delete(f"/api/aliases/{alias['id']}/?comment=retired").status_code == 204
    assert rita.get(f"/api/aliases/{alias['id']}/").status_code == 404
    assert rita.get("/api/aliases/?team=vision&task=sentiment").json()["count"] == 0

    history = rita.get(f"/api/aliases/{alias['id']}/history/").json()
    assert [
        (row["action"], row["actor"], row["from_head"], row["to_head"], row["comment"]) for row in history["results"]
    ] == [
        ("delete", "rita", newer, None, "retired"),
        ("move", "adam", sentiment, newer, "v2 wins"),
        ("set", "rita", None, sentiment, "best on the A/B test"),
    ]
    assert all(row["created_at"] for row in history["results"])
    outsider = clients["ava"].__class__()
    assert outsider.get(f"/api/aliases/{alias['id']}/history/").status_code == 401


def test_assembly_by_alias_records_what_it_resolved(team, webhook_settings, receiver):
    clients, heads, backbone = team
    rita, ava = clients["rita"], clients["ava"]
    secret = "assembly-secret-0123456789"
    hook = {"team": "vision", "url": receiver.url, "events": ["assembly.ready", "assembly.failed"], "secret": secret}
    assert rita.post("/api/webhooks/", hook, format="json").status_code == 201
    response = rita.post(
        "/api/assemblies/", {"team": "vision", "backbone": backbone, "alias": "champion"}, format="json"
    )
    assert response.status_code == 400 and "alias 'champion'" in response.json()["error"]["message"]
    assert "alias" in response.json()["error"]["detail"]

    for task in ("box", "sentiment"):
        assert _set(rita, task, heads[task]).status_code == 201
    assert _set(rita, "topic", heads["topic"], name="staging").status_code == 201
    response = ava.post(
        "/api/assemblies/", {"team": "vision", "backbone": backbone, "alias": "champion"}, format="json"
    )
    assert response.status_code == 202, response.json()
    assembly = response.json()
    assert assembly["resolved_from"] == {
        "alias": "champion",
        "heads": {"box": heads["box"], "sentiment": heads["sentiment"]},
    }
    assert [(entry["task"], entry["head_version"]) for entry in assembly["tasks"]] == [
        ("box", heads["box"]),
        ("sentiment", heads["sentiment"]),
    ]
    both = {"team": "vision", "backbone": backbone, "alias": "champion", "heads": [heads["box"]]}
    assert ava.post("/api/assemblies/", both, format="json").status_code == 400
    built = wait_status(
        ava, f"/api/assemblies/{assembly['id']}/", pending=("queued", "building", "verifying"), timeout=240
    )
    assert built["status"] == "ready", built
    assert built["resolved_from"]["alias"] == "champion"
    # The build's worker (the session's shared one) queued the event for the webhook. It delivers on its
    # own queue and allows no loopback destination, so here the body is read from the delivery log.
    from releases.models import WebhookDelivery

    delivery = wait_until(
        lambda: WebhookDelivery.objects.filter(event="assembly.ready").first(), timeout=60, message="the delivery"
    )
    body = json.loads(delivery.body)
    assert body["event"] == "assembly.ready" and body["team"] == "vision"
    assert body["data"]["assembly"] == assembly["id"] and body["data"]["resolved_from"] == assembly["resolved_from"]

    # Another alias naming the same heads answers with that assembly, and records this alias.
    for task in ("box", "sentiment"):
        assert _set(rita, task, heads[task], name="release-7").status_code == 201
    same = ava.post("/api/assemblies/", {"team": "vision", "backbone": backbone, "alias": "release-7"}, format="json")
    assert (same.status_code, same.json()["id"], same.json()["existing"]) == (200, assembly["id"], True)
    assert same.json()["resolved_from"]["alias"] == "release-7"


def test_alias_moves_reach_webhooks_signed(team, webhook_settings, webhook_worker, receiver):
    clients, heads, _ = team
    rita = clients["rita"]
    secret = "release-secret-0123456789"
    webhook = rita.post(
        "/api/webhooks/",
        {"team": "vision", "url": receiver.url, "events": ["alias.moved", "head.status_changed"], "secret": secret},
        format="json",
    )
    assert webhook.status_code == 201, webhook.json()
    assert _set(rita, "sentiment", heads["sentiment"], comment="ship it").status_code == 201
    assert clients["ava"].post(f"/api/heads/{heads['topic']}/archive/").status_code == 200
    wait_until(lambda: len(receiver.requests) >= 2, timeout=60, message="two deliveries")
    bodies = {body["event"]: body for body in (verified(request, secret) for request in receiver.requests)}
    moved = bodies["alias.moved"]["data"]
    assert (moved["name"], moved["task"], moved["from"], moved["to"]["head_version"], moved["actor"]) == (
        "champion",
        "sentiment",
        None,
        heads["sentiment"],
        "rita",
    )
    changed = bodies["head.status_changed"]["data"]
    assert (changed["head_version"], changed["old_status"], changed["new_status"]) == (
        heads["topic"],
        "approved",
        "archived",
    )
