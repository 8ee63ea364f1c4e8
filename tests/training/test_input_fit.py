"""The one rule pairing a dataset's inputs with a backbone's (training.input_fit), and the worker's
arrays made to follow it (training.work.inputs): names, kinds, shapes, padding, casting."""

import numpy as np
import pytest

from training.input_fit import inputs_fit_problem
from training.work.dataset_zips import DatasetError
from training.work.inputs import backbone_inputs

TEXT = [{"name": "text", "shape": [1], "dtype": "string"}]
TWO = [{"name": "numeric", "shape": [3], "dtype": "float32"}, {"name": "token_ids", "shape": [6], "dtype": "int32"}]


def entry(name, kind, shape, dtype=None):
    dtype = dtype or {"string": "string", "token_ids": "int32", "number": "float32"}[kind]
    return {"name": name, "kind": kind, "shape": shape, "dtype": dtype}


@pytest.mark.parametrize(
    "dataset, backbone, expected",
    [
        ([entry("x", "string", [])], TEXT, ""),  # one unnamed input, any name; (n,) -> (n, 1)
        ([entry("text", "string", [])], TEXT, ""),
        ([entry("review", "string", [])], TEXT, "no input named 'text'"),
        ([entry("x", "number", [1])], TEXT, "takes text"),
        ([entry("x", "string", [])], [{"name": "ids", "shape": [None], "dtype": "int32"}], "holds text"),
        ([entry("numeric", "number", [3]), entry("token_ids", "token_ids", [4])], TWO, ""),  # padded to 6
        ([entry("numeric", "number", [3]), entry("token_ids", "token_ids", [9])], TWO, "up to 9 token ids"),
        ([entry("numeric", "number", [2]), entry("token_ids", "token_ids", [6])], TWO, "rows of shape [2]"),
        ([entry("numeric", "number", [3]), entry("extra", "number", [1])], TWO, "does not take: 'extra'"),
        ([entry("x", "number", [3])], TWO, "no input named 'numeric', 'token_ids'"),
    ],
)
def test_inputs_fit_rule(dataset, backbone, expected):
    problem = inputs_fit_problem(dataset, backbone)
    assert (expected in problem) if expected else problem == "", problem


def test_worker_reshapes_pads_and_casts_every_input_by_name():
    strings = backbone_inputs(np.array(["good film", "bad"]), TEXT)
    assert strings.shape == (2, 1) and strings.dtype == object and strings[1, 0] == "bad"
    ids = np.array([[3, 4, 0, 0], [5, 0, 0, 0]], dtype="int64")
    fitted = backbone_inputs({"token_ids": ids, "numeric": np.ones((2, 3), "float64")}, TWO)
    assert fitted["numeric"].dtype == np.float32 and fitted["token_ids"].dtype == np.int32
    np.testing.assert_array_equal(fitted["token_ids"], [[3, 4, 0, 0, 0, 0], [5, 0, 0, 0, 0, 0]])
    # Padding past the fixed length is dropped; real ids past it are refused, naming both sides.
    padded = np.zeros((2, 8), "int32")
    padded[:, :2] = 7
    assert backbone_inputs({"token_ids": padded, "numeric": np.ones((2, 3))}, TWO)["token_ids"].shape == (2, 6)
    padded[0, 7] = 1
    with pytest.raises(DatasetError, match=r"up to 8 token ids.*at most 6") as caught:
        backbone_inputs({"token_ids": padded, "numeric": np.ones((2, 3))}, TWO)
    assert "The dataset has inputs" in str(caught.value) and "token_ids (int32, [6])" in str(caught.value)


@pytest.mark.django_db
def test_job_forms_offer_only_fitting_text_and_two_input_pairs(make_member, tmp_path):
    from backbones.models import BackboneVersion
    from tests.training.helpers import backbone_version_row, dataset_row
    from training.forms import backbone_label, compatible_choices

    user = make_member("alice", team="vision")[0]
    text_bb, two_bb, image_bb = (backbone_version_row(user, tmp_path, name=n, seed=i) for i, n in enumerate("abc"))
    BackboneVersion.objects.filter(pk=text_bb.pk).update(spec={**text_bb.spec, "inputs": TEXT})
    BackboneVersion.objects.filter(pk=two_bb.pk).update(spec={**two_bb.spec, "inputs": TWO})
    text_bb.refresh_from_db()
    two_bb.refresh_from_db()
    reviews = dataset_row(user, name="reviews", input_shape=(), inputs=[entry("x", "string", [])])
    two_inputs = [entry("numeric", "number", [3]), entry("token_ids", "token_ids", [5])]
    named = dataset_row(user, name="named", input_shape=(), inputs=two_inputs)
    datasets, backbones, fits = compatible_choices([reviews, named], [text_bb, two_bb, image_bb])
    assert fits == {reviews.pk: [text_bb.pk], named.pk: [two_bb.pk]}
    assert backbones == [text_bb, two_bb]
    assert "inputs numeric (float32, [3]) and token_ids (int32, [6])" in backbone_label(two_bb)
