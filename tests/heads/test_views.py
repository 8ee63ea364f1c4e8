"""Head dashboard pages with Django's test client: scoping, model card safety, filters,
the review panel and its POST handlers, the review queue and the import report."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from backbones.models import BackboneVersion
from heads.models import HeadEvent, HeadVersion, ModelImport
from tests.view_helpers import backbone_row, head_row

pytestmark = pytest.mark.django_db

S = HeadVersion.Status


@pytest.fixture
def alice(make_member):
    return make_member("alice", team="vision", role="member")[0]


@pytest.fixture
def as_user(client, make_member):
    """Log the test client in as a (new or existing) member of `vision`."""

    def login(username: str, role: str = "member", team: str = "vision"):
        user, _ = make_member(username, team=team, role=role)
        client.force_login(user)
        return user

    return login


@pytest.fixture
def backbone(alice):
    return backbone_row(alice)


def test_other_teams_head_and_import_pages_are_404(client, as_user, make_member):
    outsider, _ = make_member("mallory", team="audio", role="admin")
    foreign = head_row(outsider, backbone_row(outsider, team="audio"), task="speech")
    foreign_import = ModelImport.objects.create(
        team=foreign.task.team, backbone_name="x", feature_layer="f", created_by=outsider
    )
    as_user("alice", role="admin")
    assert client.get(f"/heads/{foreign.pk}/").status_code == 404
    assert client.post(f"/heads/{foreign.pk}/transition/", {"action": "archive"}).status_code == 404
    assert client.post(f"/heads/{foreign.pk}/comment/", {"body": "hi"}).status_code == 404
    assert client.get(f"/heads/imports/{foreign_import.pk}/").status_code == 404
    assert HeadVersion.objects.get(pk=foreign.pk).status == S.DRAFT
    assert "speech" not in client.get("/heads/").content.decode()


def test_model_card_is_rendered_as_markdown_without_scripts(client, alice, backbone):
    card = (
        "## Intended use\n\nSentiment of **short** reviews.\n\n"
        "<script>alert('owned')</script>\n\n"
        '<img src="x" onerror="alert(1)">\n\n'
        "[click](javascript:alert(2))\n\n"
        '<a href="https://example.com" onclick="steal()">docs</a>'
    )
    head = head_row(alice, backbone, description=card)
    client.force_login(alice)
    page = client.get(f"/heads/{head.pk}/").content.decode()
    card_html = page.split('id="model-card"', 1)[1].split("</section>", 1)[0]
    assert "<h2>Intended use</h2>" in card_html and "<strong>short</strong>" in card_html
    assert "<script" not in card_html and "alert('owned')" not in card_html
    assert "onerror" not in card_html and "onclick" not in card_html
    assert "javascript:" not in card_html
    assert 'href="https://example.com"' in card_html


def test_comments_are_sanitized_and_added_through_the_form(client, alice, backbone):
    head = head_row(alice, backbone)
    client.force_login(alice)
    response = client.post(f"/heads/{head.pk}/comment/", {"body": "Looks *good* <script>x()</script>"})
    assert response.status_code == 302 and response["Location"].endswith(f"/heads/{head.pk}/#comments")
    page = client.get(f"/heads/{head.pk}/").content.decode()
    assert "<em>good</em>" in page and "<script>x()" not in page
    assert head.events.filter(action=HeadEvent.Action.COMMENT).count() == 1
    empty = client.post(f"/heads/{head.pk}/comment/", {"body": "  "}, follow=True)
    assert "A comment needs some text." in empty.content.decode()


def test_head_detail_shows_labels_metrics_versions_and_history(client, alice, backbone):
    first = head_row(alice, backbone, labels=["neg", "neu", "pos"], metrics={"accuracy": 0.91234})
    second = head_row(alice, backbone)
    client.force_login(alice)
    page = client.get(f"/heads/{first.pk}/").content.decode()
    assert "neg" in page and "pos" in page
    assert "accuracy" in page and "0.9123" in page
    assert f"/heads/{second.pk}/" in page  # the other version of the task
    assert "Uploaded" in page  # history
    assert f"/api/heads/{first.pk}/download/" in page


def test_list_filters_by_status_task_backbone_and_text(client, alice, backbone):
    other_backbone = backbone_row(alice, name="other")
    head_row(alice, backbone, task="sentiment", description="movie reviews")
    head_row(alice, backbone, task="topic", status=S.IN_REVIEW)
    head_row(alice, other_backbone, task="spam")
    client.force_login(alice)

    def tasks(query: str) -> set[str]:
        page = client.get(f"/heads/?{query}").content.decode()
        return {slug for slug in ("sentiment", "topic", "spam") if f"<strong>{slug}</strong>" in page}

    assert tasks("") == {"sentiment", "topic", "spam"}
    assert tasks("status=in_review") == {"topic"}
    assert tasks("task=spam") == {"spam"}
    assert tasks(f"backbone={other_backbone.pk}") == {"spam"}
    assert tasks("q=movie") == {"sentiment"}
    assert tasks("status=bogus") == {"sentiment", "topic", "spam"}  # invalid filters are ignored


def test_review_panel_depends_on_role_and_authorship(client, as_user, alice, backbone):
    head = head_row(alice, backbone, status=S.IN_REVIEW)
    client.force_login(alice)
    page = client.get(f"/heads/{head.pk}/").content.decode()
    assert 'id="btn-approve"' not in page and "only reviewers and admins" in page.lower()

    as_user("alice", role="reviewer")  # the author becomes a reviewer: still may not review
    page = client.get(f"/heads/{head.pk}/").content.decode()
    assert 'id="btn-approve"' not in page and "You authored this head version" in page

    as_user("rita", role="reviewer")
    page = client.get(f"/heads/{head.pk}/").content.decode()
    assert 'id="btn-approve"' in page and 'id="btn-request-changes"' in page


def test_submit_then_approve_through_the_forms(client, as_user, alice, backbone):
    head = head_row(alice, backbone)
    client.force_login(alice)
    assert 'id="btn-submit"' in client.get(f"/heads/{head.pk}/").content.decode()
    client.post(f"/heads/{head.pk}/transition/", {"action": "submit"})
    assert HeadVersion.objects.get(pk=head.pk).status == S.IN_REVIEW

    denied = client.post(f"/heads/{head.pk}/transition/", {"action": "approve"}, follow=True)
    assert "Only reviewers and admins" in denied.content.decode()  # the service's message as a flash
    assert HeadVersion.objects.get(pk=head.pk).status == S.IN_REVIEW

    as_user("rita", role="reviewer")
    done = client.post(f"/heads/{head.pk}/transition/", {"action": "approve", "comment": "LGTM"}, follow=True)
    assert HeadVersion.objects.get(pk=head.pk).status == S.APPROVED
    page = done.content.decode()
    assert "Approved sentiment v1." in page and "LGTM" in page
    again = client.post(f"/heads/{head.pk}/transition/", {"action": "approve"}, follow=True)
    assert "its status is &#x27;approved&#x27;" in again.content.decode()
    assert client.post(f"/heads/{head.pk}/transition/", {"action": "explode"}).status_code == 400


def test_review_queue_lists_in_review_heads_of_others(client, as_user, alice, backbone):
    waiting = head_row(alice, backbone, task="topic", status=S.IN_REVIEW)
    head_row(alice, backbone, task="draft-one")
    rita = as_user("rita", role="reviewer")
    own = head_row(rita, backbone, task="mine", status=S.IN_REVIEW)
    page = client.get("/review/").content.decode()
    assert f"/heads/{waiting.pk}/" in page
    assert f"/heads/{own.pk}/" not in page and "draft-one" not in page


def test_head_upload_form_offers_only_ready_backbones_of_the_team(client, alice, backbone, make_member):
    backbone_row(alice, name="pending", status=BackboneVersion.Status.VALIDATING)
    outsider, _ = make_member("mallory", team="audio", role="admin")
    backbone_row(outsider, team="audio", name="audio-net")
    client.force_login(alice)
    page = client.get("/heads/upload/").content.decode()
    assert f'value="{backbone.pk}"' in page
    assert "pending v1" not in page and "audio-net" not in page
    bad = client.post(
        "/heads/upload/",
        {"backbone": backbone.pk, "task": "Not A Slug", "file": SimpleUploadedFile("h.keras", b"x")},
    )
    assert "Invalid task slug" in bad.content.decode()
    assert not HeadVersion.objects.exists()


def test_import_detail_shows_the_per_file_report(client, alice):
    report = [
        {"filename": "a.keras", "task": "a", "sha256": "0" * 64, "ok": False},
        {"filename": "b.keras", "task": "b", "sha256": "1" * 64, "ok": False, "error": "Backbone differs at 'hidden'."},
    ]
    model_import = ModelImport.objects.create(
        team=alice.memberships.get().team,
        backbone_name="tiny",
        feature_layer="features",
        created_by=alice,
        status=ModelImport.Status.FAILED,
        report=report,
    )
    client.force_login(alice)
    page = client.get(f"/heads/imports/{model_import.pk}/").content.decode()
    assert "a.keras" in page and "b.keras" in page
    assert "Backbone differs at &#x27;hidden&#x27;." in page
    assert "1 of 2 files failed" in page


def test_sidebar_highlights_the_current_section(client, alice, backbone):
    head = head_row(alice, backbone)
    client.force_login(alice)

    def active(url: str) -> list[str]:
        page = client.get(url).content.decode()
        return [label for label in ("Heads", "Review queue") if f'class="active">{label}</a>' in page]

    assert active("/review/") == ["Review queue"]
    assert active("/heads/") == ["Heads"]
    assert active(f"/heads/{head.pk}/") == ["Heads"]


def _file_family(user, backbone, outputs: list[str], *, model_import: int) -> list[HeadVersion]:
    """Heads cut from one multi-output file, with the origin the importer records (file + siblings)."""
    heads = [head_row(user, backbone, task=f"multi-{output}") for output in outputs]
    for head, output in zip(heads, outputs, strict=True):
        head.origin = {
            "kind": "import",
            "import": model_import,
            "file": {"filename": "multi.keras", "sha256": "ab" * 32, "outputs": outputs},
            "output": output,
            "siblings": [
                {"head_version": other.pk, "task": other.task.slug, "output": other_output}
                for other, other_output in zip(heads, outputs, strict=True)
                if other.pk != head.pk
            ],
        }
        head.save(update_fields=["origin"])
    return heads


def test_head_detail_links_the_file_and_the_heads_cut_from_it_in_fixed_queries(client, alice, backbone):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    model_import = ModelImport.objects.create(
        team=backbone.team, backbone_name="tiny", feature_layer="features", created_by=alice
    )
    small = _file_family(alice, backbone, ["cls", "reg"], model_import=model_import.pk)
    large = _file_family(alice, backbone, ["a", "b", "c", "d", "e", "f"], model_import=model_import.pk)
    plain = head_row(alice, backbone, task="plain")
    client.force_login(alice)

    page = client.get(f"/heads/{small[0].pk}/").content.decode()
    card = page.split('id="from-file"', 1)[1].split("</section>", 1)[0]
    assert "<code>cls</code> of <code>multi.keras</code>, a model with 2 outputs" in card
    assert f'href="/heads/imports/{model_import.pk}/"' in card and "sha256 abababab" in card
    siblings = card.split('id="sibling-list"', 1)[1]
    assert f'<a href="/heads/{small[1].pk}/">multi-reg</a>' in siblings and "<code>reg</code>" in siblings
    assert f"/heads/{small[0].pk}/" not in siblings  # not a sibling of itself
    assert 'id="from-file"' not in client.get(f"/heads/{plain.pk}/").content.decode()

    counts = []
    for head in (small[0], large[0]):  # 1 sibling, then 5: the same number of queries
        with CaptureQueriesContext(connection) as queries:
            assert client.get(f"/heads/{head.pk}/").status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1], counts
    page = client.get(f"/heads/{large[0].pk}/").content.decode()
    assert all(f'<a href="/heads/{head.pk}/">{head.task.slug}</a>' in page for head in large[1:])
