"""Full models fine-tuned in the top of one keras.applications MobileNetV2, as seeds 002/003 advise.

Each model is the shared base (random weights, calibrated batch statistics) with its top ``k``
inverted-residual blocks (and the final ``Conv_1``/``Conv_1_bn``) changed, then a head. ``k = 0``
is a plain head on the untouched base. The change stands in for a fine-tune at a low learning
rate: every weight of the top layers moves by a small relative amount, deterministically; the
batch statistics move too (BatchNormalization stays in inference mode when fine-tuning, but a
user's model may have been fine-tuned in training mode).

Used by tests/ml/test_branches.py, tests/heads/test_branch_import.py and bench/branches.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

LAST_BLOCK = 16  # MobileNetV2's inverted-residual blocks are block_1 .. block_16 (block 0 unnamed)
# The layer each k's branch starts after: the output of the block below the top k.
BRANCH_POINTS = {1: "block_15_add", 2: "block_14_add", 3: "block_13_project_BN", 4: "block_12_add"}


@dataclass
class BranchedFamily:
    """K full models on one MobileNetV2 base; ``tops[i]`` blocks fine-tuned in model ``i``."""

    base: Any
    tasks: list[str]
    tops: list[int]
    models: list[Any]
    widths: list[int]
    size: int
    id: str = "mobilenetv2_branched"

    @property
    def output_widths(self) -> list[int]:
        return list(self.widths)

    def save(self, folder: Path) -> list[Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for task, model in zip(self.tasks, self.models, strict=True):
            paths.append(folder / f"{task}.keras")
            model.save(paths[-1])
        return paths

    def sample_inputs(self, num_rows: int, seed: int = 0):
        import numpy as np

        return np.random.default_rng(seed).uniform(0.0, 255.0, (num_rows, self.size, self.size, 3)).astype("float32")

    def predict(self, index: int, inputs) -> Any:
        import numpy as np

        return np.asarray(self.models[index](inputs, training=False), dtype=np.float32)


def top_layer_names(base, k: int) -> list[str]:
    """The weight-bearing layers of MobileNetV2's top ``k`` blocks plus Conv_1 / Conv_1_bn."""
    if k <= 0:
        return []
    prefixes = tuple(f"block_{block}_" for block in range(LAST_BLOCK - k + 1, LAST_BLOCK + 1))
    return [
        layer.name
        for layer in base.layers
        if layer.weights and (layer.name.startswith(prefixes) or layer.name in ("Conv_1", "Conv_1_bn"))
    ]


def fine_tuned_copy(base, k: int, *, seed: int, scale: float = 0.02):
    """A copy of ``base`` whose top ``k`` blocks moved by ``scale`` x each weight's spread."""
    import keras
    import numpy as np

    copy = keras.models.clone_model(base)
    copy.set_weights(base.get_weights())
    rng = np.random.default_rng(seed)
    for name in top_layer_names(copy, k):
        layer = copy.get_layer(name)
        moved = []
        for weight in layer.get_weights():
            spread = float(np.std(weight)) or 1.0
            step = rng.standard_normal(weight.shape).astype(weight.dtype) * np.asarray(scale * spread, weight.dtype)
            moved.append(weight + step)
        # Moving variances must stay positive: BatchNormalization's last weight.
        if isinstance(layer, keras.layers.BatchNormalization):
            moved[-1] = np.abs(moved[-1]) + np.float32(1e-3)
        layer.set_weights(moved)
    return copy


def build_branched_family(
    tops: list[int], *, size: int = 32, alpha: float = 0.35, seed: int = 0, nested: bool = True
) -> BranchedFamily:
    """Build len(tops) full models; model i fine-tuned in its top ``tops[i]`` blocks.

    Args:
        tops: per model, how many top blocks it fine-tuned (0: a plain head).
        size, alpha: MobileNetV2's input size and width.
        nested: the base called as a sub-model (the Keras transfer-learning guide), else its
            layers called directly.
    """
    import keras

    from tests.real_models import _application_base

    keras.backend.clear_session()
    base = _application_base("MobileNetV2", size, seed, alpha=alpha)
    tasks = [f"task{i:02d}" for i in range(len(tops))]
    widths = [2 + (i % 5) for i in range(len(tops))]
    models = []
    for index, (task, k, width) in enumerate(zip(tasks, tops, widths, strict=True)):
        tuned = fine_tuned_copy(base, k, seed=seed + 1000 + index) if k else base
        keras.utils.set_random_seed(seed + 1 + index)
        if nested:
            inputs = keras.Input((size, size, 3), name="image")
            features = tuned(inputs, training=False)
        else:
            inputs, features = tuned.input, tuned.output
        outputs = keras.layers.Dense(width, activation="softmax", name=f"{task}_out")(features)
        models.append(keras.Model(inputs, outputs, name=f"{task}_model"))
    return BranchedFamily(base=base, tasks=tasks, tops=list(tops), models=models, widths=widths, size=size)
