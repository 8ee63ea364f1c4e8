"""A fine-tune kept as a branch: where it starts, what it holds, and the checks that guard it."""

import keras
import numpy as np
import pytest

from modelhub.ml.branches import BranchError, branch_from_fine_tune, fine_tune_branch_point, trunk_until
from modelhub.ml.freeze import freeze_backbone, top_weight_layers
from modelhub.ml.train.backbone import fine_tune
from modelhub.ml.train.model import build_head, make_trainable
from tests.ml.conftest import image_batch


@pytest.fixture
def saved(backbone, tmp_path):
    """The tiny conv backbone (conv1 > bn1 > relu1 > conv2 > pool) saved, and loaded back frozen."""
    path = tmp_path / "backbone.keras"
    backbone.save(path)
    parent = keras.saving.load_model(path, safe_mode=True)
    freeze_backbone(parent)
    return path, parent


def tuned_top(parent, num_layers: int):
    images = image_batch(48, seed=5)
    labels = (images[:, :, :, 0].mean(axis=(1, 2)) > 0).astype("int32")
    head = build_head([6], units=2, seed=1)
    result = fine_tune(
        backbone=parent, head=head, x=images, y=labels, phase1_epochs=1, phase2_epochs=2,
        unfreeze_layers=num_layers, learning_rate=0.05, seed=0,
    )  # fmt: skip
    make_trainable(result["backbone"])
    return result


def test_the_branch_starts_below_the_trained_layers_and_reproduces_the_tuned_model(saved):
    path, parent = saved
    assert top_weight_layers(parent, 2) == ["conv2", "bn1"]
    assert fine_tune_branch_point(path, parent, 2) == "conv1"
    result = tuned_top(parent, 2)
    branch, info, verification = branch_from_fine_tune(
        parent_path=path, parent=parent, tuned=result["backbone"], head=result["head"],
        trained_layers=result["unfreeze"]["unfrozen_layers"], name="quadrant_branch",
    )  # fmt: skip
    assert info.as_dict() == {
        "after_layer": "conv1",
        "layers": ["bn1", "relu1", "conv2", "pool"],
        "params": branch.count_params(),
    }
    assert branch.name == "quadrant_branch" and branch.inputs[0].shape[1:] == (8, 8, 4)
    assert verification["max_abs_diff"] <= verification["tolerance"] == pytest.approx(1e-5)

    # Independently: the parent's trunk (a Keras sub-model), the branch and the head give the tuned model's output.
    x = image_batch(6, seed=9)
    trunk = trunk_until(parent, "conv1")
    expected = result["head"](result["backbone"](x, training=False))
    got = result["head"](branch(trunk(x)))
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=1e-6)
    # bn1 trained its scale and offset, but in inference mode: its moving statistics are the parent's.
    gamma, beta, mean, variance = branch.get_layer("bn1").get_weights()
    parent_gamma, parent_beta, parent_mean, parent_variance = parent.get_layer("bn1").get_weights()
    assert not np.array_equal(gamma, parent_gamma) and not np.array_equal(beta, parent_beta)
    np.testing.assert_array_equal(mean, parent_mean)
    np.testing.assert_array_equal(variance, parent_variance)


def test_trained_layers_reaching_the_first_layer_leave_no_branch_point(saved):
    path, parent = saved
    with pytest.raises(BranchError, match="none lies below them all.*Unfreeze fewer layers"):
        fine_tune_branch_point(path, parent, 3)


def test_a_changed_trunk_is_refused(saved):
    path, parent = saved
    result = tuned_top(parent, 1)
    tuned = result["backbone"]
    kernel, bias = tuned.get_layer("conv1").get_weights()
    tuned.get_layer("conv1").set_weights([kernel, bias + 1e-3])
    with pytest.raises(BranchError, match="layer 'conv1' below the branch point to keep the parent's weights"):
        branch_from_fine_tune(
            parent_path=path, parent=parent, tuned=tuned, head=result["head"],
            trained_layers=result["unfreeze"]["unfrozen_layers"],
        )  # fmt: skip
