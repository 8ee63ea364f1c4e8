"""Self-check of the families: build, save, reload with safe_mode, compare, check the backbones agree.

.venv/bin/python -m tests.real_models [FAMILY_ID ...]
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path
from typing import Any

from tests.real_models import BUILDERS, build_family, model_inputs
from tests.real_models.weights import backbone_weights, save_with_one_weight_changed


def check_family(family_id: str, folder: Path) -> dict[str, Any]:
    """Build, save, reload (safe_mode) and compare a family; check its backbones are bit-identical."""
    import keras
    import numpy as np

    started = time.monotonic()
    family = build_family(family_id)
    built = time.monotonic() - started
    paths = family.save(folder / family_id)
    saved = time.monotonic() - started - built
    inputs = family.sample_inputs(6, 0)
    loaded = [keras.saving.load_model(path, safe_mode=True) for path in paths]
    max_diff = 0.0
    spread = np.inf
    for index, model in enumerate(loaded):
        expected = family.predict(index, inputs)
        got = np.asarray(model(model_inputs(inputs), training=False))
        assert got.shape == (6, family.output_widths[index]), (family_id, got.shape)
        assert np.all(np.isfinite(got)), family_id
        max_diff = max(max_diff, float(np.max(np.abs(got - expected))))
        spread = min(spread, float(np.max(np.std(expected, axis=0))))
    reference = backbone_weights(loaded[0], family.tasks)
    assert reference, f"{family_id}: no backbone weights found"
    for path, model in zip(paths[1:], loaded[1:], strict=True):
        other = backbone_weights(model, family.tasks)
        assert other.keys() == reference.keys(), (family_id, path.name, set(other) ^ set(reference))
        for key, value in reference.items():
            assert value.tobytes() == other[key].tobytes(), f"{family_id}: {path.name} differs at {key}"
    changed = folder / family_id / "changed.keras"
    change = save_with_one_weight_changed(paths[1], changed, layer_name=family.perturb_layer)
    changed_weights = backbone_weights(keras.saving.load_model(changed, safe_mode=True), family.tasks)
    differing = [
        (key, int(np.sum(value != changed_weights[key])))
        for key, value in reference.items()
        if value.tobytes() != changed_weights[key].tobytes()
    ]
    assert len(differing) == 1 and differing[0][1] == 1, (family_id, differing)
    assert spread > 1e-3, f"{family_id}: outputs barely depend on the inputs ({spread})"
    assert differing[0][0].startswith(f"{family.perturb_layer}/"), (family_id, differing)
    members = zipfile.ZipFile(paths[0]).namelist()
    return {
        "family": family_id,
        "feature_layer": family.feature_layer,
        "widths": family.output_widths,
        "build_s": round(built, 1),
        "save_s": round(saved, 1),
        "total_s": round(time.monotonic() - started, 1),
        "file_mb": [round(p.stat().st_size / 1e6, 2) for p in paths],
        "params": family.models[0].count_params(),
        "reload_max_abs_diff": max_diff,
        "min_output_spread": spread,
        "backbone_weights": len(reference),
        "changed": change["weight"],
        "archive": members,
        **family.notes,
    }


def main(argv: list[str]) -> int:
    import json
    import tempfile

    family_ids = argv or list(BUILDERS)
    with tempfile.TemporaryDirectory(prefix="real-models-") as tmp:
        for family_id in family_ids:
            try:
                result = check_family(family_id, Path(tmp))
            except ImportError as exc:
                result = {"family": family_id, "skipped": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
