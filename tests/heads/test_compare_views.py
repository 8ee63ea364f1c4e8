"""The compare page, the metrics-across-versions charts and the version picker (no worker).

Head versions hold real tiny Keras heads and evaluations are stored as the evaluate_head job
leaves them (metrics and an outputs .npz), so the pages compute on real files.
"""

import io

import numpy as np
import pytest

from artifacts.services import blob_store_bytes, blob_store_path
from heads.models import HeadEvaluation, HeadVersion
from heads.services import head_version_create, task_get_or_create
from tests import model_factory as mf
from tests.training.helpers import dataset_row
from tests.view_helpers import backbone_row

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(make_member):
    return make_member("alice", team="vision", role="member")[0]


def keras_head_row(user, backbone, tmp_path, *, kind="dense", seed=1, description="", labels=None) -> HeadVersion:
    model = mf.make_head(kind, units=3, seed=seed)
    blob = blob_store_path(path=mf.save(model, tmp_path / f"{kind}-{seed}.keras")).blob
    from modelhub.ml.inspect import inspect_model

    return head_version_create(
        task=task_get_or_create(team=backbone.team, slug="quadrant"), backbone=backbone, blob=blob, user=user,
        status=HeadVersion.Status.DRAFT, output_width=3, spec=inspect_model(model), description=description,
        labels=labels or ["cat", "dog", "bird"], metrics={"val_accuracy": 0.5 + seed / 10},
    )  # fmt: skip


def evaluation_row(head, dataset, outputs: np.ndarray, **metrics) -> HeadEvaluation:
    buffer = io.BytesIO()
    np.savez(buffer, outputs=outputs.astype(np.float32))
    return HeadEvaluation.objects.create(
        head=head, dataset=dataset, backbone=head.backbone, split="validation", num_examples=len(outputs),
        metrics={"num_examples": len(outputs), **metrics}, outputs=blob_store_bytes(data=buffer.getvalue()).blob,
        num_output_rows=len(outputs),
    )  # fmt: skip


def test_compare_page_shows_metrics_weights_outputs_card_diff_and_charts(client, alice, tmp_path):
    backbone = backbone_row(alice)
    a = keras_head_row(alice, backbone, tmp_path, seed=1, description="Quadrants.\nTrained on v1 data.")
    b = keras_head_row(alice, backbone, tmp_path, seed=2, description="Quadrants.\nTrained on v2 data.",
                       labels=["cat", "dog", "owl"])  # fmt: skip
    first, second = dataset_row(alice, name="holdout"), dataset_row(alice, name="fresh")
    rows = np.eye(3)[[0, 1, 2, 0]]
    evaluation_row(a, first, rows, accuracy=0.75, loss=0.5)
    evaluation_row(b, first, rows[[0, 1, 1, 0]], accuracy=0.5, loss=0.9)
    evaluation_row(a, second, rows, accuracy=0.6, loss=0.7)
    client.force_login(alice)

    page = client.get(f"/heads/compare/?a={a.pk}&b={b.pk}").content.decode()
    assert f'href="/heads/{a.pk}/"' in page and f'href="/heads/{b.pk}/"' in page
    assert f'href="/datasets/{first.pk}/"' in page and f'href="/backbones/{backbone.pk}/"' in page
    metrics = page.split('id="compare-metrics"', 1)[1].split("</section>", 1)[0]
    assert "holdout" in metrics and "fresh" not in metrics  # only datasets both were evaluated on
    assert "0.75" in metrics and "-0.25" in metrics
    outputs = page.split('id="compare-outputs"', 1)[1].split("</section>", 1)[0]
    assert "1 rows (25%)" in outputs and "4 rows compared" in outputs
    weights = page.split('id="compare-weights"', 1)[1].split("</section>", 1)[0]
    assert "Same architecture" in weights and "head_out" in weights
    card = page.split('id="card-diff"', 1)[1].split('id="metric-charts"', 1)[0]
    assert 'class="diff-removed">− Trained on v1 data.' in card and 'class="diff-added">+ Trained on v2 data.' in card
    assert "owl" in card and 'class="changed"' in card
    charts = page.split('id="metric-charts"', 1)[1]
    accuracy = charts.split('data-metric="accuracy"', 1)[1].split("</figure>", 1)[0]
    assert accuracy.count("<polyline") == 2  # one line per dataset
    assert 'data-series="holdout (#' in accuracy and ">v1<" in accuracy and ">v2<" in accuracy
    assert "<script" not in page.split("</main>", 1)[0].split('id="compare-metrics"', 1)[1]

    mlp = keras_head_row(alice, backbone, tmp_path, kind="mlp", seed=3)
    page = client.get(f"/heads/compare/?a={a.pk}&b={mlp.pk}").content.decode()
    assert "The architectures differ" in page and "No dataset has evaluations of both versions" in page


def test_version_list_links_to_compare_and_task_metrics(client, alice, tmp_path, make_member):
    backbone = backbone_row(alice)
    a = keras_head_row(alice, backbone, tmp_path, seed=1)
    b = keras_head_row(alice, backbone, tmp_path, seed=2)
    evaluation_row(b, dataset_row(alice, name="holdout"), np.eye(3), accuracy=1.0, loss=0.1)
    client.force_login(alice)

    detail = client.get(f"/heads/{b.pk}/").content.decode()
    picker = detail.split('id="compare-picker"', 1)[1].split("</form>", 1)[0]
    assert 'action="/heads/compare/"' in detail and f'value="{a.pk}"' in picker and f'value="{b.pk}"' in picker
    assert 'href="/heads/tasks/quadrant/metrics/"' in detail
    page = client.get("/heads/tasks/quadrant/metrics/").content.decode()
    assert f'href="/heads/compare/?a={a.pk}&amp;b={b.pk}"' in page and 'data-metric="accuracy"' in page
    assert client.get(f"/heads/compare/?a={a.pk}").status_code == 302

    olga = make_member("olga", team="audio")[0]
    client.force_login(olga)
    assert client.get(f"/heads/compare/?a={a.pk}&b={b.pk}").status_code == 404
    assert client.get("/heads/tasks/quadrant/metrics/").status_code == 404


def test_an_evaluate_job_page_and_list_render(client, alice, tmp_path):
    from training.services import head_evaluate

    backbone = backbone_row(alice)
    head = keras_head_row(alice, backbone, tmp_path, seed=1)
    job = head_evaluate(head=head, dataset_id=dataset_row(alice, name="holdout").pk, user=alice)
    assert (job.kind, job.status, job.params) == (
        "evaluate_head",
        "queued",
        {"head": head.pk, "dataset": job.params["dataset"], "batch_size": 64},
    )
    client.force_login(alice)
    assert "holdout" in client.get(f"/jobs/{job.pk}/").content.decode()
    assert "Evaluate a head" in client.get("/jobs/").content.decode()
