"""Every hostile file of the generated corpus, uploaded as a head through the HTTP API, is rejected
by the real worker with its reason; compare never parses it; the canary's secret shows up in no
answer and no log; and neither the worker nor the web process grows with what the files declare.
"""

import json

import pytest

from tests import hostile_files, process_memory
from tests.conftest import pool_processes
from tests.registry_helpers import ready_backbone, settled_head

pytestmark = pytest.mark.django_db(transaction=True)

# Files declare up to 4 GiB and unpack up to 256 MiB (the worker's zip-bomb limit in tests): a
# reader that allocated any of it would blow far past these.
WORKER_PEAK_GROWTH_BYTES = 300 * 1024**2
WEB_PEAK_GROWTH_BYTES = 120 * 1024**2


def test_hostile_head_files_are_rejected_through_the_api_without_leaking_or_growing(
    api_client_for, model_files, celery_worker, tmp_path
):
    canary, secret = hostile_files.make_canary(tmp_path)
    corpus = hostile_files.build_corpus(tmp_path / "files", canary)
    alice = api_client_for("alice")
    backbone = ready_backbone(alice, model_files["backbone"])
    honest = settled_head(alice, tmp_path / "files" / "honest.keras", backbone=backbone["id"], task="honest")
    assert honest["status"] == "draft", honest  # also warms the worker up (TensorFlow imported)

    [pool] = pool_processes(celery_worker)
    worker_baseline = process_memory.reset_peak(pool)
    web_baseline = process_memory.reset_peak()
    answers = []
    rejected = {}
    for kind, item in corpus.items():
        body = settled_head(alice, item.path, backbone=backbone["id"], task=kind.replace("_", "-"))
        answers.append(json.dumps(body))
        assert body["status"] == "rejected", (kind, body)
        assert item.expected.lower() in body["error"].lower(), (kind, body["error"])
        rejected[kind] = body["id"]
        compared = alice.get(f"/api/heads/compare/?a={honest['id']}&b={body['id']}")
        answers.append(compared.content.decode())
        assert compared.status_code < 500, (kind, compared.content)
        if compared.status_code == 200:  # a comparison without the weights, saying why
            assert compared.json()["weights"]["layers"] in (None, []), (kind, compared.json())
    worker_growth = process_memory.peak_rss(pool) - worker_baseline
    web_growth = process_memory.peak_rss() - web_baseline

    assert set(rejected) == set(corpus)
    leaked = [answer for answer in answers if secret.decode() in answer]
    assert not leaked, leaked[:1]
    assert secret.decode() not in celery_worker.log_path.read_text()
    assert worker_growth < WORKER_PEAK_GROWTH_BYTES, f"worker peak RSS grew {worker_growth / 1024**2:.0f} MiB"
    assert web_growth < WEB_PEAK_GROWTH_BYTES, f"web peak RSS grew {web_growth / 1024**2:.0f} MiB"
