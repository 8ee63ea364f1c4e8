"""Dashboard job forms made from the typed specs (training/form_kit.py, training/forms.py): every
field's type, default, bounds, choices, help and label is the spec's declaration; the form's data
becomes the params the API takes, and the spec's errors land on the field (or row) they concern."""

import pytest
from django import forms
from django.forms.utils import pretty_name
from django.test import override_settings

from tests.training.helpers import dataset_row
from tests.view_helpers import backbone_row
from training.forms import JOB_FORMS
from training.specs import HeadSpec, InsertSpec, WidenSpec
from training.specs.kit import Boolean, Choice, Id, Integer, Number

pytestmark = pytest.mark.django_db


@pytest.fixture
def rows(make_member):
    ana = make_member("ana", team="vision", role="member")[0]
    return backbone_row(ana), dataset_row(ana, name="quadrants")


def make(kind: str, rows, data=None):
    backbone, dataset = rows
    return JOB_FORMS[kind](data, datasets=[dataset], backbones=[backbone])


def declared_fields(form):
    """(form field name, spec class, declaration) of every field the form takes from its spec."""
    found = [(declared.field_name, form.spec_class, declared) for declared in form.layout]
    if form.repeated is not None:
        item = form.spec_class.rule(form.repeated.path).spec
        for row in range(form.repeated.count):
            found += [(f"{declared.field_name}_{row}", item, declared) for declared in form.repeated.fields]
    return found


@pytest.mark.parametrize("kind", JOB_FORMS)
def test_every_field_is_the_specs_declaration(rows, kind):
    form = make(kind, rows)
    names = set()
    for name, spec, declared in declared_fields(form):
        names.add(name)
        field, rule, default = form.fields[name], spec.rule(declared.spec_path), spec.default(declared.spec_path)
        assert field.label == (rule.label or pretty_name(declared.spec_path[-1])), name
        if name != "backbone" and not (kind == "grow_backbone" and name == "layer"):
            assert field.help_text == (declared.help or rule.doc) and field.help_text, name
        if isinstance(rule, Id):
            assert isinstance(field, forms.TypedChoiceField) and field.choices, name
        elif isinstance(rule, Integer | Number):
            low, high = rule.bounds()
            assert (field.initial, field.widget.attrs.get("min"), field.widget.attrs.get("max")) == (default, low, high)
        elif isinstance(rule, Choice):
            assert list(field.choices) == list(rule.labels.items()) and field.initial == default, name
        elif isinstance(rule, Boolean):
            assert isinstance(field, forms.BooleanField) and field.initial is default
    extra = set(form.fields) - names
    assert extra == ({"change"} if kind == "grow_backbone" else set())  # the form's own switch only


def test_bounds_are_read_when_the_form_is_made(rows):
    with override_settings(MODELHUB_MAX_EPOCHS=10, MODELHUB_MAX_HIDDEN_UNITS=16):
        form = make("train_head", rows)
        assert form.fields["epochs"].widget.attrs["max"] == 10
        backbone, dataset = rows
        data = {"backbone": backbone.pk, "dataset": dataset.pk, "task": "t", "head_type": "mlp", "hidden": "32"}
        bound = make("train_head", rows, {**data, "epochs": 5, "batch_size": 8, "learning_rate": 0.01})
        assert not bound.is_valid()
        assert bound.errors["hidden"] == [
            "each entry must be a whole number in [1, 16] (MODELHUB_MAX_HIDDEN_UNITS); got 32"
        ]


def test_a_dense_head_leaves_out_the_mlp_only_fields(rows):
    backbone, dataset = rows
    data = {"backbone": backbone.pk, "dataset": dataset.pk, "task": "t", "head_type": "dense", "hidden": "16",
            "dropout": "0.5", "epochs": 5, "batch_size": 8, "learning_rate": 0.01}  # fmt: skip
    form = make("train_head", rows, data)
    assert form.is_valid(), form.errors
    assert form.spec.head == HeadSpec() and form.spec.early_stopping is None
    mlp = make("train_head", rows, {**data, "head_type": "mlp", "hidden": "[16, 8]", "early_stopping": "2"})
    assert mlp.is_valid(), mlp.errors
    assert mlp.spec.head == HeadSpec("mlp", (16, 8), 0.5) and mlp.spec.early_stopping.patience == 2
    typo = make("train_head", rows, {**data, "head_type": "mlp", "hidden": "16, x"})
    assert not typo.is_valid() and "whole numbers such as '64, 32'" in typo.errors["hidden"][0]


def test_train_heads_rows_are_read_and_their_errors_land_on_the_row(rows):
    backbone, dataset = rows
    base = {"backbone": backbone.pk, "mode": "disjoint", "epochs": 2, "batch_size": 8}
    form = make("train_heads", rows, {**base, "task_2": "a", "dataset_2": dataset.pk, "lr_2": "0.05"})
    assert form.is_valid(), form.errors
    assert [(t.task, t.dataset, t.learning_rate) for t in form.spec.tasks] == [("a", dataset.pk, 0.05)]

    half = make("train_heads", rows, {**base, "task_1": "a"})
    assert not half.is_valid() and half.errors["dataset_1"] == ["Give both a task and a dataset."]
    empty = make("train_heads", rows, base)
    assert not empty.is_valid() and empty.non_field_errors() == ["Fill in at least one row: a task and its dataset."]

    two = {"task_0": "a", "dataset_0": dataset.pk, "task_3": "b", "dataset_3": dataset.pk}
    bad = make("train_heads", rows, {**base, **two, "head_type_3": "mlp", "hidden_3": "0"})
    assert not bad.is_valid()
    assert bad.errors["hidden_3"] == [
        "each entry must be a whole number in [1, 8192] (MODELHUB_MAX_HIDDEN_UNITS); got 0"
    ]
    twice = make("train_heads", rows, {**base, **two, "task_3": "a"})
    assert not twice.is_valid()
    assert twice.non_field_errors() == ["tasks: each task may appear once; repeated: a."]


def test_the_grow_form_fills_in_insert_or_widen_and_trains_only_with_a_dataset(rows):
    backbone, dataset = rows
    widen = make("grow_backbone", rows, {"backbone": backbone.pk, "change": "widen", "layer": "hidden", "units": "9",
                                         "insert_kind": "conv"})  # fmt: skip
    assert widen.is_valid(), widen.errors
    assert (widen.spec.widen, widen.spec.insert, widen.spec.train) == (WidenSpec("hidden", 9), None, None)

    insert = {"backbone": backbone.pk, "change": "insert", "layer": "hidden", "insert_kind": "dense", "units": "9"}
    trained = make("grow_backbone", rows, {**insert, "dataset": dataset.pk})
    assert trained.is_valid(), trained.errors
    assert trained.spec.insert == InsertSpec("hidden", "dense") and trained.spec.widen is None
    assert (trained.spec.train.dataset, trained.spec.train.epochs) == (dataset.pk, 1)
    assert trained.spec.train.only_new_layers is False  # an unchecked box is false, as the form shows it

    no_kind = make("grow_backbone", rows, {**insert, "insert_kind": ""})
    assert not no_kind.is_valid() and no_kind.errors["insert_kind"] == ["This field is required."]
    no_units = make("grow_backbone", rows, {**insert, "change": "widen", "units": ""})
    assert not no_units.is_valid() and no_units.errors["units"] == ["This field is required."]
