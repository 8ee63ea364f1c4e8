"""Dashboard forms for datasets and training jobs. They only parse input into the params dict
that the API takes; training.services (job_create and its cheap checks) does the work.

The job forms list only ready datasets and backbones of the current team that fit each other:
an .npz dataset fits a backbone whose first input has the dataset's shape, an image dataset
fits any backbone with an image input (H, W, C). Each dataset option carries the ids of the
backbones it fits (data-backbones), so job_form.js can hide the others when a backbone is picked.
"""

from django import forms

from modelhub.backbones.models import BackboneVersion
from training.models import Dataset, Job
from training.services import training_input_problem

HEAD_TYPES = [("dense", "Dense (softmax / linear)"), ("mlp", "MLP (hidden layers)")]
TRAIN_HEADS_ROWS = 4


def backbone_input_shape(backbone: BackboneVersion) -> list | None:
    inputs = (backbone.spec or {}).get("inputs") or [{}]
    shape = inputs[0].get("shape")
    return list(shape) if shape is not None else None


def is_compatible(dataset: Dataset, backbone: BackboneVersion) -> bool:
    """Whether `dataset` can train on `backbone` (the same rule as the job's cheap shape check)."""
    expected = backbone_input_shape(backbone)
    if expected is None or training_input_problem(backbone):
        return False
    if dataset.format == Dataset.Format.IMAGES:
        return len(expected) == 3
    return list(dataset.input_shape or []) == expected


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
    shape = "images" if dataset.format == Dataset.Format.IMAGES else f"shape {dataset.input_shape}"
    classes = f", {dataset.num_classes} classes" if dataset.num_classes else ""
    return f"{dataset.name} (#{dataset.pk}) · {dataset.num_examples} examples, {shape}{classes}"


def backbone_label(backbone: BackboneVersion) -> str:
    return f"{backbone.name} v{backbone.version} · input {backbone_input_shape(backbone)}"


def parse_hidden(raw: str) -> list[int]:
    raw = (raw or "").strip().strip("[]")
    if not raw:
        return []
    try:
        sizes = [int(part) for part in raw.replace(" ", ",").split(",") if part.strip()]
    except ValueError:
        raise forms.ValidationError(f"Hidden layer sizes are whole numbers such as '64, 32'; got {raw!r}.")
    if not all(size > 0 for size in sizes):
        raise forms.ValidationError("Hidden layer sizes must be positive.")
    return sizes


def head_spec(head_type: str, hidden: list[int], dropout: float | None) -> dict:
    if head_type == "mlp":
        return {"type": "mlp", "hidden": hidden or [64], "dropout": dropout or 0.0}
    return {"type": "dense"}


class DatasetUploadForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        help_text="A name your team recognises, e.g. 'reviews-2024'.",
        widget=forms.TextInput(attrs={"placeholder": "reviews-2024", "autocomplete": "off"}),
    )
    file = forms.FileField(
        label="Data file (.npz or .zip)",
        help_text="An .npz with arrays x and y (optionally x_val, y_val, labels), or a .zip of class folders of "
        "images. A worker validates it.",
        widget=forms.ClearableFileInput(attrs={"accept": ".npz,.zip"}),
    )


class JobForm(forms.Form):
    """Shared fields and helpers of the four job forms; subclasses build `params()`."""

    kind: str = ""
    title: str = ""
    intro: str = ""
    needs_dataset = True
    row_prefixes: list[str] = []

    backbone = forms.TypedChoiceField(
        coerce=int, help_text="Ready backbone versions of your team that fit at least one ready dataset."
    )

    def __init__(self, *args, datasets, backbones, **kwargs):
        super().__init__(*args, **kwargs)
        backbones = list(backbones)
        fitting_datasets, fitting_backbones, self.fits = compatible_choices(datasets, backbones)
        # A job that trains needs a backbone with a fitting dataset; growing without training does not.
        self.datasets = fitting_datasets
        self.backbones = fitting_backbones if self.needs_dataset else backbones
        if not self.needs_dataset:
            self.fields["backbone"].help_text = "Ready backbone versions of your team."
        self.add_fields()
        self.fields["backbone"].choices = [(b.pk, backbone_label(b)) for b in self.backbones]
        dataset_choices = [(d.pk, dataset_label(d)) for d in self.datasets]
        for name, field in self.fields.items():
            if name == "dataset" or name.startswith("dataset_"):
                blank = [] if field.required else [("", "—")]
                field.choices = blank + dataset_choices
                field.widget = FilteredSelect(fits=self.fits, attrs={"data-filter-by-backbone": ""})
                field.widget.choices = field.choices

    def add_fields(self) -> None:
        """Hook for forms whose fields depend on the choices (repeated rows, layer names)."""

    @property
    def is_usable(self) -> bool:
        return bool(self.backbones) and (bool(self.datasets) or not self.needs_dataset)

    def main_fields(self):
        rows = {f"{prefix}_{i}" for i in range(TRAIN_HEADS_ROWS) for prefix in self.row_prefixes}
        return [field for field in self if field.name not in rows]

    def rows(self):
        return [[self[f"{prefix}_{i}"] for prefix in self.row_prefixes] for i in range(TRAIN_HEADS_ROWS)]

    def params(self) -> dict:
        raise NotImplementedError


def head_type_field() -> forms.ChoiceField:
    return forms.ChoiceField(label="Head", choices=HEAD_TYPES, initial="dense")


def hidden_field() -> forms.CharField:
    return forms.CharField(
        required=False,
        label="Hidden layers",
        help_text="MLP only: sizes such as '64, 32'.",
        widget=forms.TextInput(attrs={"placeholder": "64", "autocomplete": "off"}),
    )


class TrainHeadForm(JobForm):
    kind = Job.Kind.TRAIN_HEAD
    title = "Train a head"
    intro = "A new head on the frozen backbone's cached features. The result is a draft head version."

    dataset = forms.TypedChoiceField(coerce=int)
    task = forms.CharField(
        max_length=63,
        help_text="Lowercase slug; a new version is added when the task exists.",
        widget=forms.TextInput(attrs={"placeholder": "sentiment", "autocomplete": "off"}),
    )
    head_type = head_type_field()
    hidden = hidden_field()
    dropout = forms.FloatField(required=False, min_value=0.0, max_value=0.95, initial=0.0, help_text="MLP only.")
    epochs = forms.IntegerField(min_value=1, max_value=1000, initial=10)
    batch_size = forms.IntegerField(min_value=1, max_value=65536, initial=32)
    learning_rate = forms.FloatField(min_value=0.0, initial=0.001)
    early_stopping = forms.IntegerField(
        required=False,
        min_value=1,
        label="Early stopping patience",
        help_text="Stop after this many epochs without a better validation loss. Empty: train all epochs.",
    )

    def clean_hidden(self):
        return parse_hidden(self.cleaned_data.get("hidden", ""))

    def params(self) -> dict:
        data = self.cleaned_data
        params = {
            "backbone": data["backbone"],
            "dataset": data["dataset"],
            "task": data["task"].strip(),
            "head": head_spec(data["head_type"], data["hidden"], data.get("dropout")),
            "epochs": data["epochs"],
            "batch_size": data["batch_size"],
            "learning_rate": data["learning_rate"],
        }
        if data.get("early_stopping"):
            params["early_stopping"] = {"patience": data["early_stopping"]}
        return params


class TrainHeadsForm(JobForm):
    kind = Job.Kind.TRAIN_HEADS
    title = "Train several heads"
    intro = (
        "Several tasks in one pass of backbone features. The datasets must share the same inputs x, each with "
        "its own labels y. Leave unused rows blank."
    )
    row_prefixes = ["task", "dataset", "head_type", "hidden", "lr"]

    mode = forms.ChoiceField(
        choices=[("joint", "Joint: one optimizer, summed loss"), ("disjoint", "Disjoint: one optimizer per head")],
        initial="joint",
        help_text="Joint mode uses one learning rate for all heads.",
    )
    epochs = forms.IntegerField(min_value=1, max_value=1000, initial=10)
    batch_size = forms.IntegerField(min_value=1, max_value=65536, initial=32)

    def add_fields(self) -> None:
        for i in range(TRAIN_HEADS_ROWS):
            self.fields[f"task_{i}"] = forms.CharField(
                max_length=63, required=False, label="Task", widget=forms.TextInput(attrs={"placeholder": "task"})
            )
            self.fields[f"dataset_{i}"] = forms.TypedChoiceField(
                coerce=int, required=False, empty_value=None, label="Dataset"
            )
            self.fields[f"head_type_{i}"] = forms.ChoiceField(
                label="Head", choices=[("dense", "Dense"), ("mlp", "MLP")], initial="dense"
            )
            self.fields[f"hidden_{i}"] = forms.CharField(
                required=False, label="Hidden", widget=forms.TextInput(attrs={"placeholder": "64"})
            )
            self.fields[f"lr_{i}"] = forms.FloatField(
                required=False, min_value=0.0, initial=0.001, label="Learning rate"
            )

    def clean(self):
        data = super().clean()
        self.tasks = []
        for i in range(TRAIN_HEADS_ROWS):
            task, dataset = (data.get(f"task_{i}") or "").strip(), data.get(f"dataset_{i}")
            if not task and not dataset:
                continue
            if not task or not dataset:
                self.add_error(f"task_{i}" if not task else f"dataset_{i}", "Give both a task and a dataset.")
                continue
            try:
                hidden = parse_hidden(data.get(f"hidden_{i}", ""))
            except forms.ValidationError as exc:
                self.add_error(f"hidden_{i}", exc)
                continue
            lr = data.get(f"lr_{i}")
            self.tasks.append(
                {
                    "task": task,
                    "dataset": dataset,
                    "head": head_spec(data.get(f"head_type_{i}", "dense"), hidden, None),
                    "learning_rate": lr if lr is not None else 0.001,
                }
            )
        if not self.tasks and not self.errors:
            raise forms.ValidationError("Fill in at least one row: a task and its dataset.")
        return data

    def params(self) -> dict:
        data = self.cleaned_data
        return {
            "backbone": data["backbone"],
            "mode": data["mode"],
            "epochs": data["epochs"],
            "batch_size": data["batch_size"],
            "tasks": self.tasks,
        }


class FineTuneForm(JobForm):
    kind = Job.Kind.FINE_TUNE
    title = "Fine-tune a backbone"
    intro = (
        "Trains a head, then unfreezes the top of the backbone. The result is a new backbone version (child of "
        "this one), a head on it, and a forgetting report for the parent's approved heads."
    )

    dataset = forms.TypedChoiceField(coerce=int)
    task = forms.CharField(max_length=63, widget=forms.TextInput(attrs={"placeholder": "sentiment"}))
    head_type = head_type_field()
    hidden = hidden_field()
    unfreeze_top = forms.IntegerField(
        min_value=1, initial=1, help_text="How many weight-bearing layers at the top of the backbone to train."
    )
    warmup_epochs = forms.IntegerField(min_value=0, initial=2, help_text="Epochs of head-only training first.")
    epochs = forms.IntegerField(min_value=1, max_value=1000, initial=2, label="Fine-tuning epochs")
    batch_size = forms.IntegerField(min_value=1, max_value=65536, initial=32)
    learning_rate = forms.FloatField(min_value=0.0, initial=0.001)
    finetune_lr_factor = forms.FloatField(
        min_value=0.0, initial=0.1, label="Fine-tune LR factor", help_text="Learning rate multiplier while unfrozen."
    )

    def clean_hidden(self):
        return parse_hidden(self.cleaned_data.get("hidden", ""))

    def params(self) -> dict:
        data = self.cleaned_data
        return {
            "backbone": data["backbone"],
            "dataset": data["dataset"],
            "task": data["task"].strip(),
            "head": head_spec(data["head_type"], data["hidden"], None),
            "unfreeze_top": data["unfreeze_top"],
            "warmup_epochs": data["warmup_epochs"],
            "epochs": data["epochs"],
            "batch_size": data["batch_size"],
            "learning_rate": data["learning_rate"],
            "finetune_lr_factor": data["finetune_lr_factor"],
        }


class GrowBackboneForm(JobForm):
    kind = Job.Kind.GROW_BACKBONE
    title = "Grow a backbone"
    intro = (
        "Inserts a layer or widens one without changing what the network computes (verified on probe inputs). "
        "Without training, the parent's approved heads are carried over; with training, they go through a "
        "forgetting report."
    )
    needs_dataset = False

    change = forms.ChoiceField(
        choices=[("insert", "Insert a layer"), ("widen", "Widen a layer")], initial="insert", widget=forms.RadioSelect
    )
    layer = forms.ChoiceField(
        label="Layer", help_text="Insert after this layer, or widen this layer. Layers of the chosen backbone."
    )
    insert_kind = forms.ChoiceField(
        label="New layer kind",
        choices=[("dense", "Dense (identity)"), ("conv", "Convolution (identity)"), ("residual", "Residual block")],
        required=False,
    )
    units = forms.IntegerField(required=False, min_value=1, label="Widen to units", help_text="Widen only.")
    dataset = forms.TypedChoiceField(
        coerce=int,
        required=False,
        empty_value=None,
        label="Train on dataset",
        help_text="Optional. Leave empty to keep the function exactly (heads are carried automatically).",
    )
    train_epochs = forms.IntegerField(required=False, min_value=1, initial=1, label="Training epochs")
    only_new_layers = forms.BooleanField(required=False, initial=True, label="Train only the new layers")

    def add_fields(self) -> None:
        layers: dict[str, list[int]] = {}
        for backbone in self.backbones:
            for layer in (backbone.spec or {}).get("layers", []):
                layers.setdefault(layer["name"], []).append(backbone.pk)
        self.fields["layer"].choices = [(name, name) for name in layers]
        self.fields["layer"].widget = FilteredSelect(fits=layers, attrs={"data-filter-by-backbone": ""})
        self.fields["layer"].widget.choices = self.fields["layer"].choices

    def clean(self):
        data = super().clean()
        if data.get("change") == "insert" and not data.get("insert_kind"):
            self.add_error("insert_kind", "Pick the kind of layer to insert.")
        if data.get("change") == "widen" and not data.get("units"):
            self.add_error("units", "Give the new number of units.")
        return data

    def params(self) -> dict:
        data = self.cleaned_data
        params = {"backbone": data["backbone"]}
        if data["change"] == "insert":
            params["insert"] = {"after_layer": data["layer"], "kind": data["insert_kind"]}
        else:
            params["widen"] = {"layer": data["layer"], "units": data["units"]}
        if data.get("dataset"):
            params["train"] = {
                "dataset": data["dataset"],
                "epochs": data.get("train_epochs") or 1,
                "only_new_layers": bool(data.get("only_new_layers")),
            }
        return params


JOB_FORMS = {form.kind: form for form in (TrainHeadForm, TrainHeadsForm, FineTuneForm, GrowBackboneForm)}
