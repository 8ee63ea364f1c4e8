"""Typed job specs (training/specs/): every field's type, bounds and default, the cross-field
rules, the settings that bound them, and that the API, the dashboard forms and the services
give the same answer for the same input (a 400 naming the field, never a 500 or a stored job)."""

import pytest
from django.test import override_settings

from tests.training.helpers import dataset_row
from tests.view_helpers import backbone_row
from training.forms import JOB_FORMS
from training.models import Job
from training.specs import (
    HeadSpec,
    JobSpecError,
    TrainHeadSpec,
    describe_errors,
    job_spec_parse,
    stored_backbone_id,
    stored_dataset_ids,
    stored_summary,
)

MINIMAL = {
    "train_head": {"backbone": 1, "dataset": 2, "task": "t"},
    "train_heads": {"backbone": 1, "tasks": [{"task": "a", "dataset": 2}]},
    "fine_tune": {"backbone": 1, "dataset": 2, "task": "t"},
    "grow_backbone": {"backbone": 1, "insert": {"after_layer": "hidden", "kind": "dense"}},
}
DENSE = {"type": "dense", "hidden": [], "dropout": 0.0}


def errors(kind: str, params) -> dict:
    with pytest.raises(JobSpecError) as caught:
        job_spec_parse(kind, params)
    return caught.value.errors


# --- Defaults: one per field -----------------------------------------------------------------


def test_every_kind_fills_its_defaults():
    assert job_spec_parse("train_head", MINIMAL["train_head"]).to_params() == {
        "backbone": 1, "dataset": 2, "task": "t", "head": DENSE, "epochs": 5, "batch_size": 32,
        "learning_rate": 0.001,
    }  # fmt: skip
    assert job_spec_parse("train_heads", MINIMAL["train_heads"]).to_params() == {
        "backbone": 1, "tasks": [{"task": "a", "dataset": 2, "head": DENSE, "learning_rate": 0.001}], "mode": "joint",
        "epochs": 5, "batch_size": 32,
    }  # fmt: skip
    assert job_spec_parse("fine_tune", MINIMAL["fine_tune"]).to_params() == {
        "backbone": 1, "dataset": 2, "task": "t", "head": DENSE, "unfreeze_top": 1, "warmup_epochs": 2, "epochs": 2,
        "batch_size": 32, "learning_rate": 0.001, "finetune_lr_factor": 0.1, "output": "backbone",
    }  # fmt: skip
    grow = job_spec_parse("grow_backbone", {**MINIMAL["grow_backbone"], "train": {"dataset": 3}}).to_params()
    assert grow == {
        "backbone": 1, "insert": {"after_layer": "hidden", "kind": "dense"},
        "train": {"dataset": 3, "epochs": 1, "batch_size": 32, "learning_rate": 0.0001, "only_new_layers": True},
    }  # fmt: skip


@pytest.mark.parametrize("kind", MINIMAL)
def test_stored_params_read_back_to_the_same_spec(kind):
    spec = job_spec_parse(kind, MINIMAL[kind])
    assert job_spec_parse(kind, spec.to_params()) == spec


def test_null_means_the_default_and_unknown_fields_are_not_stored():
    spec = job_spec_parse("train_head", {**MINIMAL["train_head"], "epochs": None, "seed": None, "colour": "red"})
    assert spec.epochs == 5 and spec.seed is None
    assert "colour" not in spec.to_params() and "seed" not in spec.to_params()


def test_an_mlp_head_gets_one_hidden_layer_of_64_and_sizes_from_the_dataset():
    head = HeadSpec.parse({"type": "mlp"})
    assert head.hidden == (64,) and head.units is None and head.activation is None
    assert head.for_dataset(target="classes", num_classes=4) == HeadSpec("mlp", (64,), 0.0, 4, "softmax")
    assert HeadSpec.parse({}).for_dataset(target="values", num_classes=None).activation == "linear"
    assert HeadSpec.parse({"units": 7}).for_dataset(target="classes", num_classes=3).units == 7


# --- Types and bounds ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, change, path, message",
    [
        ("train_head", {"backbone": "abc"}, ("backbone",), "must be an id (a positive whole number); got 'abc'"),
        ("train_head", {"backbone": 0}, ("backbone",), "must be an id"),
        ("train_head", {"dataset": True}, ("dataset",), "got True"),
        ("train_head", {"task": "Bad Slug"}, ("task",), "Invalid task slug 'Bad Slug'"),
        ("train_head", {"task": 3}, ("task",), "must be a non-empty string; got 3"),
        ("train_head", {"head": 3}, ("head", "non_field_errors"), "must be an object (JSON {...}); got 3"),
        ("train_head", {"head": {"type": "cnn"}}, ("head", "type"), "must be one of 'dense', 'mlp'; got 'cnn'"),
        ("train_head", {"head": {"type": "mlp", "dropout": "x"}}, ("head", "dropout"), "[0, 1); got 'x'"),
        ("train_head", {"head": {"type": "mlp", "dropout": 1}}, ("head", "dropout"), "[0, 1); got 1"),
        ("train_head", {"head": {"type": "mlp", "hidden": "64"}}, ("head", "hidden"), "must be a list of whole"),
        ("train_head", {"head": {"type": "mlp", "hidden": [0]}}, ("head", "hidden"), "each entry must be"),
        ("train_head", {"head": {"type": "mlp", "hidden": [9000]}}, ("head", "hidden"), "MODELHUB_MAX_HIDDEN_UNITS"),
        ("train_head", {"head": {"type": "mlp", "hidden": [8] * 17}}, ("head", "hidden"), "MODELHUB_MAX_HIDDEN_LAYERS"),
        ("train_head", {"head": {"units": 0}}, ("head", "units"), "in [1, 100000] (MODELHUB_MAX_HEAD_UNITS)"),
        ("train_head", {"head": {"activation": "relu"}}, ("head", "activation"), "'softmax', 'sigmoid', 'linear'"),
        ("train_head", {"epochs": 0}, ("epochs",), "in [1, 1000] (MODELHUB_MAX_EPOCHS); got 0"),
        ("train_head", {"epochs": 2.5}, ("epochs",), "must be a whole number"),
        ("train_head", {"epochs": "5"}, ("epochs",), "got '5'"),
        ("train_head", {"batch_size": 70000}, ("batch_size",), "(MODELHUB_MAX_BATCH_SIZE)"),
        ("train_head", {"learning_rate": 0}, ("learning_rate",), "in (0, 1] (MODELHUB_MAX_LEARNING_RATE); got 0"),
        ("train_head", {"learning_rate": float("nan")}, ("learning_rate",), "got nan"),
        ("train_head", {"seed": -1}, ("seed",), "in [0, 4294967295]"),
        ("train_head", {"early_stopping": {}}, ("early_stopping", "patience"), "This field is required."),
        ("train_head", {"early_stopping": {"patience": 0}}, ("early_stopping", "patience"), "got 0"),
        ("train_heads", {"tasks": "abc"}, ("tasks",), "must be a non-empty list of objects"),
        ("train_heads", {"tasks": []}, ("tasks",), "must be a non-empty list"),
        ("train_heads", {"tasks": [{"task": "a"}]}, ("tasks", 0, "dataset"), "This field is required."),
        ("train_heads", {"mode": "both"}, ("mode",), "'joint', 'disjoint'"),
        ("fine_tune", {"unfreeze_top": 0}, ("unfreeze_top",), "a whole number >= 1; got 0"),
        ("fine_tune", {"warmup_epochs": -1}, ("warmup_epochs",), "in [0, 1000]"),
        ("fine_tune", {"finetune_lr_factor": 0}, ("finetune_lr_factor",), "in (0, 1]"),
        ("fine_tune", {"finetune_lr_factor": 2}, ("finetune_lr_factor",), "in (0, 1]"),
        ("fine_tune", {"output": "nonsense"}, ("output",), "must be one of 'backbone', 'branch'; got 'nonsense'"),
        ("grow_backbone", {"insert": {"kind": "dense"}}, ("insert", "after_layer"), "This field is required."),
        ("grow_backbone", {"insert": {"after_layer": "h", "kind": "lstm"}}, ("insert", "kind"), "'residual'"),
        (
            "grow_backbone",
            {"insert": None, "widen": {"layer": "h", "units": 20000}},
            ("widen", "units"),
            "(MODELHUB_MAX_GROWTH_UNITS)",
        ),
        ("grow_backbone", {"train": {"dataset": 3, "only_new_layers": "yes"}}, ("train", "only_new_layers"), "true"),
    ],
)
def test_each_field_is_typed_and_bounded(kind, change, path, message):
    found = errors(kind, {**MINIMAL[kind], **change})
    for key in path:
        found = found[key]
    assert any(message in text for text in found), found


def test_bounds_come_from_the_settings():
    with override_settings(MODELHUB_MAX_EPOCHS=10, MODELHUB_MAX_LEARNING_RATE=10.0, MODELHUB_MAX_GROWTH_UNITS=64):
        assert errors("train_head", {**MINIMAL["train_head"], "epochs": 11})["epochs"] == [
            "must be a whole number in [1, 10] (MODELHUB_MAX_EPOCHS); got 11"
        ]
        assert job_spec_parse("train_head", {**MINIMAL["train_head"], "learning_rate": 5}).learning_rate == 5.0
        widen = {"backbone": 1, "widen": {"layer": "h", "units": 65}}
        assert "in [1, 64]" in errors("grow_backbone", widen)["widen"]["units"][0]


# --- Cross-field rules --------------------------------------------------------------------------


def test_cross_field_rules():
    dense = {**MINIMAL["train_head"], "head": {"type": "dense", "hidden": [8], "dropout": 0.5}}
    assert set(errors("train_head", dense)["head"]) == {"hidden", "dropout"}
    twice = {"backbone": 1, "tasks": [{"task": "a", "dataset": 2}, {"task": "a", "dataset": 3}]}
    assert errors("train_heads", twice) == {"tasks": ["each task may appear once; repeated: a."]}
    rates = {"backbone": 1, "tasks": [{"task": "a", "dataset": 2, "learning_rate": 0.1}, {"task": "b", "dataset": 2}]}
    assert "joint mode uses one optimizer" in errors("train_heads", rates)["mode"][0]
    assert job_spec_parse("train_heads", {**rates, "mode": "disjoint"}).tasks[1].learning_rate == 0.001
    assert errors("grow_backbone", {"backbone": 1})["non_field_errors"][0].startswith("give exactly one of")
    both = {"backbone": 1, "insert": {"after_layer": "h", "kind": "dense"}, "widen": {"layer": "h", "units": 9}}
    assert "non_field_errors" in errors("grow_backbone", both)
    conv = {"backbone": 1, "insert": {"after_layer": "h", "kind": "conv", "kernel_size": 4}}
    assert errors("grow_backbone", conv)["insert"]["kernel_size"][0].startswith("must be odd")
    dense_kernel = {"backbone": 1, "insert": {"after_layer": "h", "kind": "dense", "kernel_size": 3}}
    assert errors("grow_backbone", dense_kernel)["insert"] == {"kernel_size": ["applies to kind 'conv' only."]}
    hidden = {"backbone": 1, "insert": {"after_layer": "h", "kind": "conv", "hidden_units": 3}}
    assert errors("grow_backbone", hidden)["insert"] == {"hidden_units": ["applies to kind 'residual' only."]}


def test_unknown_kinds_and_non_objects_are_refused_by_name():
    assert errors("train_everything", {}) == {
        "kind": [
            "must be one of train_head, train_heads, fine_tune, grow_backbone, evaluate_head; got 'train_everything'"
        ]
    }
    assert errors("train_head", [1, 2]) == {"non_field_errors": ["must be an object (JSON {...}); got [1, 2]"]}
    assert describe_errors({"head": {"dropout": ["bad."]}, "tasks": {1: {"task": ["x."]}}}) == (
        "head.dropout: bad; tasks.1.task: x"
    )


def test_the_rules_are_documented():
    for name in ("epochs", "batch_size", "learning_rate", ("head", "dropout"), ("early_stopping", "patience")):
        assert TrainHeadSpec.rule(name).doc
    assert TrainHeadSpec.default("epochs") == 5 and TrainHeadSpec.default(("head", "type")) == "dense"


def test_stored_params_are_read_tolerantly():
    bad = {"backbone": "abc", "head": 3, "tasks": "x", "train": 5, "dataset": True}
    assert stored_backbone_id(bad) is None and stored_dataset_ids(bad) == set() and stored_summary(bad) == ""
    assert stored_dataset_ids(["a"]) == set() and stored_summary("text") == ""
    good = {"backbone": 4, "tasks": [{"task": "a", "dataset": 2}, 7, {"task": "b", "dataset": 3}]}
    assert (stored_backbone_id(good), stored_dataset_ids(good), stored_summary(good)) == (4, {2, 3}, "a, b")
    assert stored_summary({"widen": {"layer": "hidden"}}) == "widen hidden"


# --- API, forms and services give the same answer ------------------------------------------------


@pytest.fixture
def ana(make_member):
    return make_member("ana", team="vision", role="member")[0]


@pytest.fixture
def api(ana):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(ana)
    return client


@pytest.fixture
def rows(ana):
    return backbone_row(ana), dataset_row(ana, name="quadrants")


BAD_INPUTS = [
    ({"backbone": "abc"}, ("backbone",), None),  # the form offers only its team's backbones
    ({"task": "Bad Slug"}, ("task",), "task"),
    ({"head": {"type": "mlp", "dropout": 1.5}}, ("head", "dropout"), "dropout"),
    ({"head": {"type": "mlp", "hidden": [0]}}, ("head", "hidden"), "hidden"),
    ({"epochs": 100000}, ("epochs",), "epochs"),
    ({"learning_rate": 0}, ("learning_rate",), "learning_rate"),
    ({"early_stopping": {"patience": 0}}, ("early_stopping", "patience"), "early_stopping"),
]


def train_head_params(rows, change: dict) -> dict:
    backbone, dataset = rows
    params = {"backbone": backbone.pk, "dataset": dataset.pk, "task": "quadrant", "head": {"type": "dense"}}
    return {**params, **change}


def form_data(params: dict) -> dict:
    """The train_head form's fields for `params` (the inverse of TrainHeadForm.params)."""
    head = params.get("head") or {}
    data = {
        "backbone": params["backbone"], "dataset": params["dataset"], "task": params["task"],
        "head_type": head.get("type", "dense"), "hidden": ", ".join(str(h) for h in head.get("hidden", [])),
        "dropout": head.get("dropout", ""), "epochs": params.get("epochs", 5),
        "batch_size": params.get("batch_size", 32), "learning_rate": params.get("learning_rate", 0.001),
        "early_stopping": (params.get("early_stopping") or {}).get("patience", ""),
    }  # fmt: skip
    return {key: value for key, value in data.items() if value != ""}


@pytest.mark.parametrize("change, path, form_field", BAD_INPUTS)
def test_api_form_and_service_refuse_the_same_input_the_same_way(api, ana, rows, change, path, form_field):
    params = train_head_params(rows, change)
    # The service's spec (also what job_retry and the worker read).
    expected = errors("train_head", params)
    for key in path:
        expected = expected[key]
    # The API: 400 in the standard envelope, the same messages under the same path, nothing stored.
    response = api.post("/api/jobs/", {"team": "vision", "kind": "train_head", **params}, format="json")
    assert response.status_code == 400, response.json()
    body = response.json()["error"]
    assert body["code"] == "invalid" and ".".join(path[:1]) in body["message"]
    detail = body["detail"]
    for key in path:
        detail = detail[key]
    assert detail == expected
    # The dashboard form: the same messages on the field they belong to.
    if form_field is not None:
        backbone, dataset = rows
        form = JOB_FORMS["train_head"](form_data(params), datasets=[dataset], backbones=[backbone])
        assert not form.is_valid()
        assert form.errors[form_field] == expected, form.errors
    assert Job.objects.count() == 0


def test_api_and_form_store_the_same_params_for_the_same_job(api, ana, rows, client):
    params = train_head_params(rows, {"head": {"type": "mlp", "hidden": [16, 8], "dropout": 0.1}, "epochs": 7})
    params["early_stopping"] = {"patience": 2}
    by_api = api.post("/api/jobs/", {"team": "vision", "kind": "train_head", **params}, format="json")
    assert by_api.status_code == 202 and by_api.json()["status"] == "queued", by_api.json()
    client.force_login(ana)
    assert client.post("/jobs/new/?kind=train_head", form_data(params)).status_code == 302
    first, second = Job.objects.order_by("pk")
    assert first.params == second.params == by_api.json()["params"]
    head = {"type": "mlp", "hidden": [16, 8], "dropout": 0.1, "units": 3, "activation": "softmax"}
    assert first.params["head"] == head


@pytest.mark.parametrize(
    "body, field",
    [
        ({"kind": "train_heads", "backbone": 1, "tasks": [{"task": "a", "dataset": "x"}]}, "tasks"),
        ({"kind": "grow_backbone", "backbone": 1, "widen": {"layer": "h", "units": 9}, "train": 3}, "train"),
        ({"kind": "fine_tune", "backbone": 1, "dataset": 1, "task": "t", "unfreeze_top": "all"}, "unfreeze_top"),
        ({"kind": "fine_tune", "backbone": 1, "dataset": 1, "task": "t", "output": "nonsense"}, "output"),
    ],
)
def test_malformed_params_of_every_kind_are_a_400_naming_the_field(api, body, field):
    response = api.post("/api/jobs/", {"team": "vision", **body}, format="json")
    assert response.status_code == 400 and field in response.json()["error"]["detail"]
    assert Job.objects.count() == 0


def test_an_unknown_fine_tune_output_is_a_400_saying_what_was_expected(api):
    body = {"team": "vision", "kind": "fine_tune", "backbone": 1, "dataset": 1, "task": "t", "output": "nonsense"}
    response = api.post("/api/jobs/", body, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["detail"] == {"output": ["must be one of 'backbone', 'branch'; got 'nonsense'"]}
    assert "output: must be one of 'backbone', 'branch'; got 'nonsense'" in error["message"]
    assert Job.objects.count() == 0


def test_a_json_body_that_is_not_an_object_is_a_400(api):
    response = api.post("/api/jobs/", [1, 2], format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid"


def test_checks_that_need_the_database_still_create_the_job_failed(api, rows):
    backbone, dataset = rows
    params = {"team": "vision", "kind": "train_head", "backbone": backbone.pk, "dataset": dataset.pk, "task": "t"}
    response = api.post("/api/jobs/", {**params, "head": {"units": 2}}, format="json")
    assert response.status_code == 202 and response.json()["status"] == "failed"
    assert "range over 3 classes" in response.json()["error"]
    missing = api.post("/api/jobs/", {**params, "backbone": 999999}, format="json")
    assert missing.status_code == 202 and "is not in team 'vision'" in missing.json()["error"]
    assert missing.json()["params"]["backbone"] == 999999  # stored as the spec read it
