"""Which backbone a branch import stores: the one most files share, whatever the order of the files.

The issue's example, through the HTTP API and a real worker: `aa` and `bb` fine-tuned the top
layer of the backbone (each its own way), `cc` (two outputs) and `dd` use the untouched base.
With `aa` first, the import used to store `aa`'s tuned backbone; now the base (2 of 4 files) is
stored in any order, the report says which file and why, and `aa` and `bb` get branches.
"""

import io
import json
import zipfile

import numpy as np
import pytest

from backbones.models import BackboneVersion
from tests import model_factory as mf
from tests.heads.test_import_multi_output import OutputFamily, make_two_output_model, settled_import
from tests.heads.test_real_models import approve_assemble_and_serve

pytestmark = pytest.mark.django_db(transaction=True)


def tuned(backbone, *, seed: int):
    """A copy of the backbone whose top layer ('features') moved a little: a fine-tune of the top."""
    import keras

    copy = keras.models.clone_model(backbone)
    copy.set_weights(backbone.get_weights())
    layer = copy.get_layer(mf.FEATURE_LAYER)
    rng = np.random.default_rng(seed)
    layer.set_weights([w + 0.05 * rng.standard_normal(w.shape).astype(w.dtype) for w in layer.get_weights()])
    return copy


@pytest.fixture(scope="module")
def tuned_files(tmp_path_factory):
    base = mf.make_backbone(seed=0)
    folder = tmp_path_factory.mktemp("reference")
    models = {
        "aa": mf.make_full_model(tuned(base, seed=1), "dense", 3, seed=11, name="aa"),
        "bb": mf.make_full_model(tuned(base, seed=2), "regression", 2, seed=12, name="bb"),
        "cc": make_two_output_model(base, seed=13),
        "dd": mf.make_full_model(base, "mlp", 4, seed=14, name="dd"),
    }
    return base, models, {name: mf.save(model, folder / f"{name}.keras") for name, model in models.items()}


def downloaded_weights(client, backbone_id: int, tmp_path) -> list[np.ndarray]:
    import keras

    response = client.get(f"/api/backbones/{backbone_id}/download/")
    assert response.status_code == 200
    path = tmp_path / f"backbone-{backbone_id}.keras"
    path.write_bytes(b"".join(response.streaming_content))
    assert zipfile.is_zipfile(io.BytesIO(path.read_bytes()))
    return keras.saving.load_model(path, safe_mode=True).get_weights()


def test_the_base_most_files_share_is_stored_in_either_order(tuned_files, api_client_for, celery_worker, tmp_path):
    base, _, paths = tuned_files
    client = api_client_for("ana")
    fingerprints = []
    for order, expected_file in ((["aa", "bb", "cc", "dd"], "cc.keras"), (["dd", "bb", "aa", "cc"], "dd.keras")):
        imported = settled_import(client, [paths[name] for name in order], branches="true")
        assert imported["status"] == "succeeded", json.dumps(imported, indent=1)
        reference = imported["summary"]["reference"]
        assert reference["file"] == expected_file and reference["files_sharing"] == 2, reference
        assert "2 of 4 files share this backbone" in reference["reason"]
        by_file = {}
        for entry in imported["report"]:
            by_file.setdefault(entry["filename"], []).append(entry)
        for name in ("aa", "bb"):
            assert by_file[f"{name}.keras"][0]["branch"]["after_layer"] == "hidden", by_file[f"{name}.keras"]
        for name in ("cc", "dd"):
            assert all(entry["branch"] is None for entry in by_file[f"{name}.keras"])
        assert [entry["task"] for entry in by_file["cc.keras"]] == ["cc-cls", "cc-reg"]
        backbone = client.get(f"/api/backbones/{imported['backbone']}/").json()
        fingerprints.append(backbone["weights_sha256"])
    assert fingerprints[0] == fingerprints[1]
    assert BackboneVersion.objects.count() == 1
    # Independently: the stored backbone holds the untouched base's weights.
    stored = downloaded_weights(client, BackboneVersion.objects.get().pk, tmp_path)
    original = base.get_weights()
    assert len(stored) == len(original)
    assert all(np.array_equal(a, b) for a, b in zip(stored, original, strict=True))


@pytest.mark.slow
def test_branches_and_two_outputs_serve_every_original_output(tuned_files, api_client_for, celery_worker, tmp_path):
    _, models, paths = tuned_files
    author = api_client_for("alice")
    reviewer = api_client_for("rita", role="reviewer")
    imported = settled_import(author, [paths[name] for name in ("aa", "bb", "cc", "dd")], branches="true")
    assert imported["status"] == "succeeded", json.dumps(imported, indent=1)
    family = OutputFamily(
        tasks=["aa", "bb", "cc-cls", "cc-reg", "dd"],
        output_widths=[3, 2, 3, 1, 4],
        outputs=[
            (models["aa"], None),
            (models["bb"], None),
            (models["cc"], "cls"),
            (models["cc"], "reg"),
            (models["dd"], None),
        ],
    )
    approve_assemble_and_serve(author, reviewer, family, imported, family.predict, tmp_path, timeout=300)
