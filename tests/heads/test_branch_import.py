"""Trunk and branches end to end: models fine-tuned in the top of a MobileNetV2, through the HTTP API.

Five full models share one keras.applications MobileNetV2 base: two are plain heads, three
fine-tuned their top 1, 2 and 4 inverted-residual blocks (tests/branched_models.py). The strict
import fails naming those three; the branch import keeps their top layers as branches; the
heads are reviewed and assembled, and the downloaded SavedModel, run in a fresh process that
imports only TensorFlow, reproduces every ORIGINAL full model on a batch mixing all tasks.
"""

import json

import pytest

from backbones.models import BackboneVersion
from heads.models import HeadVersion
from tests.branched_models import BRANCH_POINTS, build_branched_family
from tests.heads.test_real_models import approve_assemble_and_serve, import_files

pytestmark = pytest.mark.django_db(transaction=True)

TOPS = [0, 0, 1, 2, 4]


@pytest.fixture(scope="module")
def branched(tmp_path_factory):
    family = build_branched_family(TOPS)
    return family, family.save(tmp_path_factory.mktemp("branched"))


def test_strict_import_fails_then_branch_import_serves_every_original_model(
    branched, api_client_for, celery_worker, tmp_path
):
    family, paths = branched
    author = api_client_for("alice")
    reviewer = api_client_for("rita", role="reviewer")

    # Strict (the default): the fine-tuned models fail the whole import, each named.
    strict = import_files(author, paths, feature_layer=None, timeout=300)
    assert strict["status"] == "failed"
    failed = [entry["filename"] for entry in strict["report"] if entry.get("error")]
    assert failed == [paths[i].name for i, k in enumerate(TOPS) if k]
    assert HeadVersion.objects.count() == 0 and BackboneVersion.objects.count() == 0

    # With branches: one backbone, plain heads for the untouched models, branches for the others.
    imported = import_files(author, paths, feature_layer=None, timeout=300, branches="true", min_shared_fraction="0.2")
    assert imported["status"] == "succeeded", json.dumps(imported, indent=1)
    assert imported["branches"] is True and imported["min_shared_fraction"] == 0.2
    assert imported["summary"]["trunk"]["after_layer"] == BRANCH_POINTS[4]
    assert BackboneVersion.objects.count() == 1
    for entry, k in zip(imported["report"], TOPS, strict=True):
        head = author.get(f"/api/heads/{entry['head_version']}/").json()
        if k == 0:
            assert entry["branch"] is None and head["branch"] is None
            continue
        assert entry["branch"]["after_layer"] == BRANCH_POINTS[k]
        assert head["branch"] == entry["branch"]
        assert entry["shared_bytes"] > 0 and entry["owned_bytes"] > entry["branch"]["params"] * 4 - 1
    params = [imported["report"][i]["branch"]["params"] for i in (2, 3, 4)]
    assert params == sorted(params) and len(set(params)) == 3  # deeper fine-tunes own more

    manifest = approve_assemble_and_serve(author, reviewer, family, imported, family.predict, tmp_path, timeout=300)
    assert manifest["backbone"]["trunk"]["branch_points"] == [BRANCH_POINTS[4], BRANCH_POINTS[2], BRANCH_POINTS[1]]
    by_task = {entry["task"]: entry for entry in manifest["heads"]}
    for task, k in zip(family.tasks, TOPS, strict=True):
        branch = by_task[task]["branch"]
        assert (branch is None) == (k == 0)
        if branch:
            assert branch["after_layer"] == BRANCH_POINTS[k] and branch["params"] > 0
