"""Assemblies read Dense heads from their packed weights: written at import, recorded for heads that
lack them, and a damaged packed copy fails the build loudly and is packed again from the artifact."""

import numpy as np
import pytest

from tests.registry_helpers import import_and_approve, wait_status

pytestmark = pytest.mark.django_db(transaction=True)

PENDING = ("queued", "building", "verifying")


def _assemble(client, backbone: int, **extra) -> dict:
    response = client.post("/api/assemblies/", {"team": "vision", "backbone": backbone, **extra}, format="json")
    assert response.status_code in (200, 202), response.json()
    return wait_status(client, f"/api/assemblies/{response.json()['id']}/", pending=PENDING, timeout=240)


def test_packed_weights_are_written_used_and_checked(api_client_for, model_files, celery_worker):
    from artifacts.stores import get_blob_store
    from heads.models import HeadVersion, HeadWeights
    from modelhub.ml.head_weights import pack, unpack

    author = api_client_for("alice")
    reviewer = api_client_for("rita", role="reviewer")
    imported = import_and_approve(author, reviewer, model_files)
    heads = list(HeadVersion.objects.filter(backbone_id=imported["backbone"]).select_related("blob", "task"))
    weights = {w.source_id: w for w in HeadWeights.objects.filter(source__in=[h.blob for h in heads])}
    # The import packed every head (all three are Dense chains on the 6 features).
    assert set(weights) == {h.blob_id for h in heads}
    assert all(w.packed_id and w.input_width == 6 and w.steps[-1][0] == "dense" for w in weights.values())

    # A head stored before packed weights existed: the first assembly records them.
    legacy = heads[0]
    HeadWeights.objects.filter(source=legacy.blob).delete()
    assembly = _assemble(author, imported["backbone"])
    assert assembly["status"] == "ready", assembly
    assert HeadWeights.objects.filter(source=legacy.blob, packed__isnull=False).exists()

    # Damage one packed copy in the store (valid format, other numbers): the build refuses it,
    # discards the packed copies, and the next build packs them again from the artifacts.
    victim = HeadWeights.objects.select_related("packed").get(source=heads[1].blob)
    store = get_blob_store()
    with store.open(victim.packed.sha256) as handle:
        chain = unpack(handle.read())
    damaged = type(chain)(chain.steps, chain.input_width, tuple(k + 1.0 for k in chain.kernels), chain.biases)
    path = store._path(victim.packed.sha256)  # noqa: SLF001 (the filesystem store of the tests)
    path.chmod(0o644)
    path.write_bytes(pack(damaged))
    failed = _assemble(author, imported["backbone"], task_signatures=True)  # another SavedModel: built anew
    assert failed["status"] == "failed"
    assert f"{heads[1].task.slug} v{heads[1].version} do not match its artifact" in failed["error"]
    assert not HeadWeights.objects.filter(source__in=[h.blob for h in heads]).exists()
    again = _assemble(author, imported["backbone"], task_signatures=True)  # the failed build is queued again
    assert again["id"] == failed["id"] and again["status"] == "ready", again
    repacked = HeadWeights.objects.select_related("packed").get(source=heads[1].blob)
    with store.open(repacked.packed.sha256) as handle:
        np.testing.assert_array_equal(unpack(handle.read()).kernels[0], chain.kernels[0])
