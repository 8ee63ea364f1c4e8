"""Backbone dashboard pages with Django's test client: scoping, detail content, upload form."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from artifacts.models import Blob
from backbones.models import BackboneVersion
from tests.view_helpers import backbone_row, head_row

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(client, make_member):
    user, _ = make_member("alice", team="vision", role="member")
    client.force_login(user)
    return user


def test_pages_need_a_login(client):
    response = client.get("/backbones/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_list_shows_only_the_current_teams_backbones(client, alice, make_member):
    outsider, _ = make_member("mallory", team="audio", role="admin")
    backbone_row(alice, name="vision-net")
    backbone_row(outsider, team="audio", name="audio-net")
    page = client.get("/backbones/").content.decode()
    assert "vision-net" in page
    assert "audio-net" not in page


def test_detail_shows_layers_lineage_heads_and_download(client, alice):
    parent = backbone_row(alice, name="tiny")
    backbone = backbone_row(alice, name="tiny", parent=parent)
    child = backbone_row(alice, name="tiny-grown", parent=backbone)
    head = head_row(alice, backbone, task="sentiment")
    response = client.get(f"/backbones/{backbone.pk}/")
    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="layer-table"' in page and "hidden" in page and "Dense" in page and "108" in page
    assert "frozen" in page and "trainable" in page
    assert f"/backbones/{parent.pk}/" in page and f"/backbones/{child.pk}/" in page  # ancestors and children
    assert f"/heads/{head.pk}/" in page
    assert f"/api/backbones/{backbone.pk}/download/" in page
    assert "(8,)" in page and "(6,)" in page  # input and feature shapes
    assert f'data-poll-status="{backbone.status}"' in page


def test_rejected_backbone_shows_its_error(client, alice):
    backbone = backbone_row(alice, status=BackboneVersion.Status.REJECTED)
    BackboneVersion.objects.filter(pk=backbone.pk).update(error="Layer 'lambda' is a Lambda layer.")
    page = client.get(f"/backbones/{backbone.pk}/").content.decode()
    assert "badge-rejected" in page and "is a Lambda layer" in page


def test_other_teams_backbone_is_404(client, alice, make_member):
    outsider, _ = make_member("mallory", team="audio", role="admin")
    foreign = backbone_row(outsider, team="audio", name="audio-net")
    assert client.get(f"/backbones/{foreign.pk}/").status_code == 404
    assert client.get("/backbones/999999/").status_code == 404


def test_upload_with_wrong_extension_shows_the_error_and_stores_nothing(client, alice):
    response = client.post(
        "/backbones/upload/",
        {"name": "tiny", "file": SimpleUploadedFile("model.h5", b"not a keras file")},
    )
    assert response.status_code == 200
    assert "Expected a .keras file" in response.content.decode()
    assert not BackboneVersion.objects.exists() and not Blob.objects.exists()


def test_upload_form_requires_a_name(client, alice):
    response = client.post("/backbones/upload/", {"file": SimpleUploadedFile("m.keras", b"x")})
    assert response.status_code == 200 and "This field is required" in response.content.decode()
    assert not BackboneVersion.objects.exists()
