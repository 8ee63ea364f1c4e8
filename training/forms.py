"""Dashboard forms for datasets and training jobs. Each job form lists the spec fields it shows
(training.form_kit makes the Django fields from the spec's one declaration: type, default,
bounds, choices, help, label), builds the same typed spec as the API and shows its errors on
the field they belong to. training.services.job_create does the work.

The job forms list only ready datasets and backbones of the current team that fit each other
(training.services.dataset_fit_problem, the rule job_create checks). Each dataset option carries
the ids of the backbones it fits (data-backbones), so job_form.js can hide the others when a
backbone is picked.
"""

from django import forms

from backbones.models import BackboneVersion
from training.form_kit import FormField, Rows, SpecForm
from training.input_fit import describe_inputs
from training.models import Dataset
from training.services import backbone_input_shape, dataset_fit_problem
from training.specs import FineTuneSpec, GrowBackboneSpec, TrainHeadSpec, TrainHeadsSpec


def is_compatible(dataset: Dataset, backbone: BackboneVersion) -> bool:
    """Whether `dataset` can train on `backbone` (the rule of job_create's shape check)."""
    return not dataset_fit_problem(dataset, backbone)


def compatible_choices(datasets, backbones) -> tuple[list[Dataset], list[BackboneVersion], dict[int, list[int]]]:
    """Keep the datasets that fit some backbone and the backbones that fit some dataset.

    Returns (datasets, backbones, {dataset id: [backbone ids it fits]}).
    """
    datasets, backbones = list(datasets), list(backbones)
    fits = {d.pk: [b.pk for b in backbones if is_compatible(d, b)] for d in datasets}
    usable = {pk for ids in fits.values() for pk in ids}
    return (
        [d for d in datasets if fits[d.pk]],
        [b for b in backbones if b.pk in usable],
        {pk: ids for pk, ids in fits.items() if ids},
    )


class FilteredSelect(forms.Select):
    """A select whose options carry data-backbones="1 4" (the backbone ids each option fits)."""

    def __init__(self, *args, fits: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fits = fits or {}

    def create_option(self, name, value, label, selected, index, subindex=None, attrs=None):
        option = super().create_option(name, value, label, selected, index, subindex, attrs)
        key = getattr(value, "value", value)
        if key in self.fits or str(key) in self.fits:
            ids = self.fits.get(key, self.fits.get(str(key)))
            option["attrs"]["data-backbones"] = " ".join(str(i) for i in ids)
        return option


def dataset_label(dataset: Dataset) -> str:
    if dataset.format == Dataset.Format.IMAGES:
        shape = "images"
    elif len(dataset.inputs or []) > 1 or any(entry.get("kind") == "string" for entry in dataset.inputs or []):
        shape = f"inputs {describe_inputs(dataset.inputs)}"
    else:
        shape = f"shape {dataset.input_shape}"
    classes = f", {dataset.num_classes} classes" if dataset.num_classes else ""
    return f"{dataset.name} (#{dataset.pk}) · {dataset.num_examples} examples, {shape}{classes}"


def backbone_label(backbone: BackboneVersion) -> str:
    inputs = (backbone.spec or {}).get("inputs") or []
    if len(inputs) > 1 or any(spec.get("dtype") == "string" for spec in inputs):
        return f"{backbone.name} v{backbone.version} · inputs {describe_inputs(inputs)}"
    return f"{backbone.name} v{backbone.version} · input {backbone_input_shape(backbone)}"


class DatasetUploadForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        help_text="A name your team recognises, e.g. 'reviews-2024'.",
        widget=forms.TextInput(attrs={"placeholder": "reviews-2024", "autocomplete": "off"}),
    )
    file = forms.FileField(
        label="Data file (.csv, .jsonl, .parquet, .npz or .zip)",
        help_text="A table (CSV, JSON Lines, Parquet), an .npz with arrays x (or x_<input>) and y (optionally "
        "x_val, y_val, labels), or a .zip of class folders of images. A worker validates it.",
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,.jsonl,.ndjson,.parquet,.npz,.zip"}),
    )
    columns = forms.CharField(
        required=False,
        label="Columns (tables only, JSON)",
        help_text='E.g. {"inputs": {"text": "review"}, "label": "sentiment", "validation": {"fraction": 0.1}}. '
        "Leave empty for a table of a 'label' column and one other column.",
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": '{"inputs": "review", "label": "sentiment"}'}),
    )


class JobForm(SpecForm):
    """What the four job forms share: the backbones and datasets they offer, and the page's text.

    Id fields (spec rule ``Id``) offer the team's ready rows that fit: backbones that fit some
    dataset (any backbone when the job needs no dataset), datasets that fit some backbone.
    """

    title: str = ""
    intro: str = ""
    needs_dataset = True

    def __init__(self, *args, datasets, backbones, **kwargs):
        super().__init__(*args, **kwargs)
        backbones = list(backbones)
        fitting_datasets, fitting_backbones, self.fits = compatible_choices(datasets, backbones)
        # A job that trains needs a backbone with a fitting dataset; growing without training does not.
        self.datasets = fitting_datasets
        self.backbones = fitting_backbones if self.needs_dataset else backbones
        self.offer_choices()
        self.fields["backbone"].help_text = (
            "Ready backbone versions of your team that fit at least one ready dataset."
            if self.needs_dataset
            else "Ready backbone versions of your team."
        )

    def offer_choices(self) -> None:
        """Fill the id fields with the rows offered; dataset options name the backbones they fit."""
        dataset_choices = [(d.pk, dataset_label(d)) for d in self.datasets]
        for field in self.fields.values():
            of = getattr(field, "of", None)
            if of == "backbone":
                field.choices = [(b.pk, backbone_label(b)) for b in self.backbones]
            elif of == "dataset":
                field.choices = ([] if field.required else [("", "—")]) + dataset_choices
                field.widget = FilteredSelect(fits=self.fits, attrs={"data-filter-by-backbone": ""})
                field.widget.choices = field.choices

    @property
    def is_usable(self) -> bool:
        return bool(self.backbones) and (bool(self.datasets) or not self.needs_dataset)

    def _row_names(self) -> list[list[str]]:
        if self.repeated is None:
            return []
        names = [declared.field_name for declared in self.repeated.fields]
        return [[f"{name}_{row}" for name in names] for row in range(self.repeated.count)]

    def main_fields(self):
        in_rows = {name for row in self._row_names() for name in row}
        return [field for field in self if field.name not in in_rows]

    def rows(self):
        return [[self[name] for name in row] for row in self._row_names()]


HEAD_TYPE = FormField("head.type", name="head_type")
HIDDEN = FormField("head.hidden", name="hidden", when=("head_type", "mlp"), placeholder="64")


class TrainHeadForm(JobForm):
    spec_class = TrainHeadSpec
    title = "Train a head"
    intro = "A new head on the frozen backbone's cached features. The result is a draft head version."
    layout = (
        "backbone",
        "dataset",
        FormField("task", placeholder="sentiment"),
        HEAD_TYPE,
        HIDDEN,
        FormField("head.dropout", name="dropout", when=("head_type", "mlp")),
        "epochs",
        "batch_size",
        "learning_rate",
        FormField("early_stopping.patience", name="early_stopping"),
    )


class TrainHeadsForm(JobForm):
    spec_class = TrainHeadsSpec
    title = "Train several heads"
    intro = (
        "Several tasks in one pass of backbone features. The datasets must share the same inputs x, each with "
        "its own labels y. Leave unused rows blank."
    )
    layout = ("backbone", "mode", "epochs", "batch_size")
    repeated = Rows(
        "tasks",
        fields=(
            FormField("task", placeholder="task"),
            FormField("dataset"),
            HEAD_TYPE,
            HIDDEN,
            FormField("learning_rate", name="lr"),
        ),
        needs=("task", "dataset"),
    )


class FineTuneForm(JobForm):
    spec_class = FineTuneSpec
    title = "Fine-tune a backbone"
    intro = (
        "Trains a head, then unfreezes the top of the backbone. The result is a new backbone version (child of "
        "this one), a head on it, and a forgetting report for the parent's approved heads; or, with output "
        "'branch', only a head on this backbone that owns the tuned top layers as its branch."
    )
    layout = (
        "backbone",
        "dataset",
        FormField("task", placeholder="sentiment"),
        HEAD_TYPE,
        HIDDEN,
        "unfreeze_top",
        "warmup_epochs",
        "epochs",
        "batch_size",
        "learning_rate",
        "finetune_lr_factor",
        FormField("output", radio=True),
    )


class GrowBackboneForm(JobForm):
    spec_class = GrowBackboneSpec
    title = "Grow a backbone"
    intro = (
        "Inserts a layer or widens one without changing what the network computes (verified on probe inputs). "
        "Without training, the parent's approved heads are carried over; with training, they go through a "
        "forgetting report."
    )
    needs_dataset = False
    # Not a job parameter: which of the spec's "insert" and "widen" the form fills in.
    change = forms.ChoiceField(
        choices=[("insert", "Insert a layer"), ("widen", "Widen a layer")], initial="insert", widget=forms.RadioSelect
    )
    field_order = ["backbone", "change"]
    layout = (
        "backbone",
        FormField(
            "insert.after_layer",
            name="layer",
            when=("change", "insert"),
            help="Insert after this layer, or widen this layer. Layers of the chosen backbone.",
        ),
        FormField("insert.kind", name="insert_kind", when=("change", "insert")),
        FormField("widen.units", name="units", when=("change", "widen")),
        FormField("widen.layer", name="layer", when=("change", "widen")),
        FormField(
            "train.dataset",
            name="dataset",
            help="Optional. Leave empty to keep the function exactly (heads are carried automatically).",
        ),
        FormField("train.epochs", name="train_epochs", when="dataset"),
        FormField("train.only_new_layers", name="only_new_layers", when="dataset"),
    )

    def offer_choices(self) -> None:
        """Offer the layers of the backbones offered; each option names the backbones that have it."""
        super().offer_choices()
        layers: dict[str, list[int]] = {}
        for backbone in self.backbones:
            for layer in (backbone.spec or {}).get("layers", []):
                layers.setdefault(layer["name"], []).append(backbone.pk)
        field = self.fields["layer"]
        self.fields["layer"] = forms.ChoiceField(
            label=field.label,
            help_text=field.help_text,
            choices=[(name, name) for name in layers],
            widget=FilteredSelect(fits=layers, attrs={"data-filter-by-backbone": ""}),
        )


JOB_FORMS = {form.spec_class.kind: form for form in (TrainHeadForm, TrainHeadsForm, FineTuneForm, GrowBackboneForm)}
