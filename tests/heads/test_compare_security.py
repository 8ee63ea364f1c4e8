"""Compare reads only validated head files, runs large pairs on a worker, and caches per pair of blobs.

A head whose validation is pending or failed holds a canary: bytes that would crash the reader and
that must never be opened, parsed or echoed. The store and the reader are watched in the web
process, so "never read" is checked, not assumed.
"""

import os

import pytest
from django.core.cache import cache

from artifacts.services import blob_store_bytes, blob_store_path
from artifacts.stores import get_blob_store
from heads.compare import weights_cache_key, weights_compare_run
from heads.models import HeadVersion
from heads.services import head_version_create, task_get_or_create
from tests import model_factory as mf
from tests.conftest import wait_until
from tests.view_helpers import backbone_row


def keras_head(user, backbone, tmp_path, *, seed: int, status=HeadVersion.Status.DRAFT) -> HeadVersion:
    """A head version holding a real tiny Keras head (validated unless `status` says otherwise)."""
    from modelhub.ml.inspect import inspect_model

    model = mf.make_head("dense", units=3, seed=seed)
    path = mf.save(model, tmp_path / f"head-{seed}-{os.urandom(4).hex()}.keras")
    return head_version_create(
        task=task_get_or_create(team=backbone.team, slug="quadrant"), backbone=backbone,
        blob=blob_store_path(path=path).blob, user=user, status=status, output_width=3, spec=inspect_model(model),
    )  # fmt: skip


def canary_head(user, backbone, *, status: str) -> tuple[HeadVersion, bytes]:
    """A head version whose file is a canary (not a model: parsing it would fail and echo it)."""
    canary = f"CANARY-{os.urandom(8).hex()}".encode()
    blob = blob_store_bytes(data=b"PK\x03\x04" + canary * 64).blob
    head = head_version_create(
        task=task_get_or_create(team=backbone.team, slug="quadrant"), backbone=backbone, blob=blob, user=user,
        status=status, output_width=3,
    )  # fmt: skip
    return head, canary


@pytest.fixture
def watch(monkeypatch):
    """Return a function that starts recording every blob the web process opens, and makes the
    weights reader fail if the web process calls it; it returns (opened sha256s, parsed pairs)."""
    return lambda: _watch(monkeypatch)


def _watch(monkeypatch) -> tuple[list, list]:
    opened, parsed = [], []
    store_class = type(get_blob_store())
    real_open = store_class.open

    def open_recorded(self, sha256):
        opened.append(sha256)
        return real_open(self, sha256)

    def reader_recorded(path_a, path_b, **limits):
        parsed.append((path_a.read_bytes(), path_b.read_bytes()))
        raise AssertionError("the web process must not parse head files in this test")

    monkeypatch.setattr(store_class, "open", open_recorded)
    monkeypatch.setattr("modelhub.ml.compare.compare_head_weights", reader_recorded)
    return opened, parsed


@pytest.mark.django_db
@pytest.mark.parametrize("status", [HeadVersion.Status.VALIDATING, HeadVersion.Status.REJECTED])
def test_compare_refuses_heads_not_validated_without_reading_them(
    status, api_client_for, client, tmp_path, watch
):  # fmt: skip
    api = api_client_for("alice")
    backbone = backbone_row(api.user)
    good = keras_head(api.user, backbone, tmp_path, seed=1)
    bad, canary = canary_head(api.user, backbone, status=status)
    opened, parsed = watch()
    client.force_login(api.user)

    for a, b in ((good, bad), (bad, good)):
        response = api.get(f"/api/heads/compare/?a={a.pk}&b={b.pk}")
        assert response.status_code == 409, response.content
        error = response.json()["error"]
        assert error["code"] == "head_not_validated"
        assert error["detail"] == {"head": bad.pk, "status": status}
        expected = "is still being validated" if status == HeadVersion.Status.VALIDATING else "was rejected"
        assert f"Head version {bad.pk} (quadrant v{bad.version}) {expected}" in error["message"]
        assert "only head versions whose file a worker has validated" in error["message"]
        assert canary not in response.content

        page = client.get(f"/heads/compare/?a={a.pk}&b={b.pk}", follow=True)
        assert page.redirect_chain[0] == (f"/heads/{bad.pk}/", 302)
        assert expected in page.content.decode() and canary not in page.content

    # The worker's side re-checks the rows: nothing is read and nothing is cached for the pair.
    weights_compare_run(head_a_id=good.pk, head_b_id=bad.pk)
    assert cache.get(weights_cache_key(sha256_a=good.blob.sha256, sha256_b=bad.blob.sha256)) is None
    assert bad.blob.sha256 not in opened and good.blob.sha256 not in opened
    assert parsed == []


@pytest.mark.django_db(transaction=True)
def test_large_compares_run_on_a_worker_and_the_cache_answers_again(
    api_client_for, celery_worker, tmp_path, settings, monkeypatch, watch
):  # fmt: skip
    from modelhub.celery import app
    from modelhub.ml.compare import compare_head_weights

    api = api_client_for("bob")
    backbone = backbone_row(api.user)
    a, b = keras_head(api.user, backbone, tmp_path, seed=1), keras_head(api.user, backbone, tmp_path, seed=2)
    expected = compare_head_weights(
        get_blob_store()._path(a.blob.sha256), get_blob_store()._path(b.blob.sha256), max_bytes=64 * 1024**2
    )
    assert expected["same_architecture"] is True and expected["relative_l2_change"] > 0
    key = weights_cache_key(sha256_a=a.blob.sha256, sha256_b=b.blob.sha256)
    cache.delete_many([key, f"{key}:pending"])
    opened, parsed = watch()
    settings.MODELHUB_COMPARE_WEB_MAX_BYTES = a.blob.size_bytes + b.blob.size_bytes - 1  # one byte too many
    settings.MODELHUB_COMPARE_MAX_WAIT = 0
    sent = []
    real_send = app.send_task
    monkeypatch.setattr(app, "send_task", lambda name, **kw: sent.append((name, kw)) or real_send(name, **kw))
    url = f"/api/heads/compare/?a={a.pk}&b={b.pk}"

    first = api.get(url)
    assert first.status_code == 200 and first["Retry-After"] == "2"
    weights = first.json()["weights"]
    assert weights["computing"] is True and weights["layers"] == [] and weights["same_architecture"] is None
    assert "A worker is comparing the weights" in weights["difference"]
    assert "MODELHUB_COMPARE_WEB_MAX_BYTES" in weights["difference"]
    assert sent == [("heads.compare_weights", {"args": [a.pk, b.pk]})]

    def computed():
        body = api.get(url).json()
        return body if not body["weights"]["computing"] else None

    body = wait_until(
        computed, timeout=60, interval=0.2, message=f"the worker's comparison (log {celery_worker.log_path})"
    )
    assert len(sent) == 1, "polling while the worker computes must not queue the pair again"
    weights = body["weights"]
    assert weights["same_architecture"] is True and weights["difference"] is None
    assert weights["relative_l2_change"] == pytest.approx(expected["relative_l2_change"], rel=1e-9)
    assert [layer["layer"] for layer in weights["layers"]] == [layer["layer"] for layer in expected["layers"]]

    # The cache answers from now on: no task is sent and the web process reads no head file.
    monkeypatch.setattr(app, "send_task", lambda *args, **kwargs: pytest.fail("compare sent a task"))
    again = api.get(url)
    assert again.status_code == 200 and "Retry-After" not in again
    assert again.json()["weights"] == weights
    assert parsed == [] and a.blob.sha256 not in opened and b.blob.sha256 not in opened


@pytest.mark.django_db
def test_small_compares_run_in_the_web_process_once_per_pair(api_client_for, tmp_path, monkeypatch):
    from modelhub.ml import compare as ml_compare

    api = api_client_for("carol")
    backbone = backbone_row(api.user)
    a, b = keras_head(api.user, backbone, tmp_path, seed=3), keras_head(api.user, backbone, tmp_path, seed=4)
    cache.delete(weights_cache_key(sha256_a=a.blob.sha256, sha256_b=b.blob.sha256))
    calls = []
    real = ml_compare.compare_head_weights
    monkeypatch.setattr(ml_compare, "compare_head_weights", lambda *args, **kw: calls.append(args) or real(*args, **kw))
    first = api.get(f"/api/heads/compare/?a={a.pk}&b={b.pk}").json()["weights"]
    second = api.get(f"/api/heads/compare/?a={a.pk}&b={b.pk}").json()["weights"]
    assert first == second and first["computing"] is False and first["same_architecture"] is True
    assert len(calls) == 1
