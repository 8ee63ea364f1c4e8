"""Dashboard forms for datasets and training jobs. The job forms build the same typed spec as
the API (training.specs.job_spec_parse) and show its errors on the field they belong to; their
defaults, bounds and help come from the spec too. training.services.job_create does the work.

The job forms list only ready datasets and backbones of the current team that fit each other
(training.services.dataset_fit_problem, the rule job_create checks). Each dataset option carries
the ids of the backbones it fits (data-backbones), so job_form.js can hide the others when a
backbone is picked.
"""

from django import forms

from backbones.models import BackboneVersion
from training.models import Dataset
from training.services import backbone_input_shape, dataset_fit_problem
from training.specs import (
    NON_FIELD_ERRORS,
    FineTuneSpec,
    GrowBackboneSpec,
    JobSpec,
    JobSpecError,
    TrainHeadSpec,
    TrainHeadsSpec,
    job_spec_parse,
)

HEAD_TYPES = [("dense", "Dense (softmax / linear)"), ("mlp", "MLP (hidden layers)")]
FINE_TUNE_OUTPUT_CHOICES = [
    ("backbone", "A new backbone version, with the head on it"),
    ("branch", "A head that owns the tuned top layers (a branch) on this backbone"),
]
TRAIN_HEADS_ROWS = 4


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
    shape = "images" if dataset.format == Dataset.Format.IMAGES else f"shape {dataset.input_shape}"
    classes = f", {dataset.num_classes} classes" if dataset.num_classes else ""
    return f"{dataset.name} (#{dataset.pk}) · {dataset.num_examples} examples, {shape}{classes}"


def backbone_label(backbone: BackboneVersion) -> str:
    return f"{backbone.name} v{backbone.version} · input {backbone_input_shape(backbone)}"


def parse_hidden(raw: str) -> list[int]:
    """Read hidden layer sizes typed as '64, 32' (their bounds are the spec's)."""
    raw = (raw or "").strip().strip("[]")
    if not raw:
        return []
    try:
        return [int(part) for part in raw.replace(" ", ",").split(",") if part.strip()]
    except ValueError:
        raise forms.ValidationError(f"Hidden layer sizes are whole numbers such as '64, 32'; got {raw!r}.")


def head_params(head_type: str, hidden: list[int], dropout: float | None) -> dict:
    """The head's params; hidden sizes and dropout are read for MLP heads only (as labelled)."""
    if head_type == "mlp":
        params = {"type": "mlp", "hidden": hidden}
        if dropout is not None:
            params["dropout"] = dropout
        return params
    return {"type": "dense"}


def error_paths(errors: dict, prefix: tuple = ()) -> list[tuple[tuple, list[str]]]:
    """Flatten a JobSpecError's errors into (path, messages) pairs: (("head", "dropout"), [...])."""
    pairs = []
    for key, value in errors.items():
        path = prefix if key == NON_FIELD_ERRORS else (*prefix, key)
        if isinstance(value, dict):
            pairs += error_paths(value, path)
        else:
            pairs.append((path, list(value)))
    return pairs


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
    """Shared fields and helpers of the four job forms.

    Subclasses name their spec, build the params it reads (`params()`) and map their fields to
    the spec's fields (`spec_fields`: form field -> path in the spec). The spec gives each mapped
    field its default, its min/max and its help, and its errors land on that field; the parsed
    spec is `form.spec` once the form is valid.
    """

    spec_class: type[JobSpec] = JobSpec
    title: str = ""
    intro: str = ""
    needs_dataset = True
    row_prefixes: list[str] = []
    spec_fields: dict[str, tuple] = {"backbone": ("backbone",)}
    # More spec paths whose errors a field shows (e.g. a whole nested object's).
    more_error_fields: dict[tuple, str] = {}

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
        self.spec: JobSpec | None = None
        self._apply_spec()
        self.fields["backbone"].choices = [(b.pk, backbone_label(b)) for b in self.backbones]
        dataset_choices = [(d.pk, dataset_label(d)) for d in self.datasets]
        for name, field in self.fields.items():
            if name == "dataset" or name.startswith("dataset_"):
                blank = [] if field.required else [("", "—")]
                field.choices = blank + dataset_choices
                field.widget = FilteredSelect(fits=self.fits, attrs={"data-filter-by-backbone": ""})
                field.widget.choices = field.choices

    @property
    def kind(self) -> str:
        return self.spec_class.kind

    def add_fields(self) -> None:
        """Hook for forms whose fields depend on the choices (repeated rows, layer names)."""

    def read_rows(self, data: dict) -> None:
        """Hook for forms with repeated rows: read them (adding errors) before the spec is built."""

    def _field_paths(self) -> dict[str, tuple]:
        """Every form field mapped to its spec field (repeated rows map like their first row)."""
        return dict(self.spec_fields)

    def _apply_spec(self) -> None:
        """Give each mapped field the spec's default, bounds (HTML min/max) and help."""
        for name, path in self._field_paths().items():
            field = self.fields.get(name)
            if field is None:
                continue
            rule = self.spec_class.rule(path)
            low, high = rule.bounds()
            if isinstance(field, forms.IntegerField | forms.FloatField):
                if low is not None:
                    field.widget.attrs.setdefault("min", low)
                if high is not None:
                    field.widget.attrs.setdefault("max", high)
            default = self.spec_class.default(path)
            if field.initial is None and isinstance(default, int | float | str) and not isinstance(default, bool):
                field.initial = default
            if not field.help_text and rule.doc:
                field.help_text = rule.doc

    def clean(self):
        data = super().clean()
        self.read_rows(data)
        if self.errors:
            return data
        try:
            self.spec = job_spec_parse(self.kind, self.params())
        except JobSpecError as exc:
            self.add_spec_errors(exc.errors)
        return data

    def add_spec_errors(self, errors: dict) -> None:
        """Show the spec's errors on the fields they belong to (others above the form)."""
        for path, messages in error_paths(errors):
            field = self.field_for(path)
            if field is None:
                where = ".".join(str(part) for part in path)
                self.add_error(None, [f"{where}: {message}" if where else message for message in messages])
            else:
                self.add_error(field, messages)

    def field_for(self, path: tuple) -> str | None:
        """Return the form field showing errors of the spec field at `path` (longest match), or None."""
        by_path = {**self.more_error_fields, **{spec_path: name for name, spec_path in self.spec_fields.items()}}
        for length in range(len(path), 0, -1):
            if by_path.get(path[:length]) in self.fields:
                return by_path[path[:length]]
        return None

    @property
    def is_usable(self) -> bool:
        return bool(self.backbones) and (bool(self.datasets) or not self.needs_dataset)

    def main_fields(self):
        rows = {f"{prefix}_{i}" for i in range(TRAIN_HEADS_ROWS) for prefix in self.row_prefixes}
        return [field for field in self if field.name not in rows]

    def rows(self):
        return [[self[f"{prefix}_{i}"] for prefix in self.row_prefixes] for i in range(TRAIN_HEADS_ROWS)]

    def params(self) -> dict:
        """Return the job's parameters (the JSON the API takes) from the cleaned fields."""
        raise NotImplementedError("subclasses of JobForm must provide params()")


def head_type_field() -> forms.ChoiceField:
    return forms.ChoiceField(label="Head", choices=HEAD_TYPES, initial="dense")


def hidden_field() -> forms.CharField:
    return forms.CharField(
        required=False,
        label="Hidden layers",
        help_text="MLP only: sizes such as '64, 32' (default 64).",
        widget=forms.TextInput(attrs={"placeholder": "64", "autocomplete": "off"}),
    )


class TrainHeadForm(JobForm):
    spec_class = TrainHeadSpec
    title = "Train a head"
    intro = "A new head on the frozen backbone's cached features. The result is a draft head version."
    spec_fields = {
        "backbone": ("backbone",),
        "dataset": ("dataset",),
        "task": ("task",),
        "head_type": ("head", "type"),
        "hidden": ("head", "hidden"),
        "dropout": ("head", "dropout"),
        "epochs": ("epochs",),
        "batch_size": ("batch_size",),
        "learning_rate": ("learning_rate",),
        "early_stopping": ("early_stopping", "patience"),
    }
    more_error_fields = {("head",): "head_type", ("early_stopping",): "early_stopping"}

    dataset = forms.TypedChoiceField(coerce=int)
    task = forms.CharField(
        max_length=63,
        help_text="Lowercase slug; a new version is added when the task exists.",
        widget=forms.TextInput(attrs={"placeholder": "sentiment", "autocomplete": "off"}),
    )
    head_type = head_type_field()
    hidden = hidden_field()
    dropout = forms.FloatField(required=False, help_text="MLP only: dropout after each hidden layer, in [0, 1).")
    epochs = forms.IntegerField()
    batch_size = forms.IntegerField()
    learning_rate = forms.FloatField()
    early_stopping = forms.IntegerField(
        required=False,
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
            "head": head_params(data["head_type"], data["hidden"], data.get("dropout")),
            "epochs": data["epochs"],
            "batch_size": data["batch_size"],
            "learning_rate": data["learning_rate"],
        }
        if data.get("early_stopping") is not None:
            params["early_stopping"] = {"patience": data["early_stopping"]}
        return params


class TrainHeadsForm(JobForm):
    spec_class = TrainHeadsSpec
    title = "Train several heads"
    intro = (
        "Several tasks in one pass of backbone features. The datasets must share the same inputs x, each with "
        "its own labels y. Leave unused rows blank."
    )
    row_prefixes = ["task", "dataset", "head_type", "hidden", "lr"]
    spec_fields = {
        "backbone": ("backbone",),
        "mode": ("mode",),
        "epochs": ("epochs",),
        "batch_size": ("batch_size",),
    }
    # Row fields (suffix _<row>) and the field of a task entry each one shows.
    row_fields = {
        "task": ("task",),
        "dataset": ("dataset",),
        "head_type": ("head",),
        "hidden": ("head", "hidden"),
        "lr": ("learning_rate",),
    }

    mode = forms.ChoiceField(
        choices=[("joint", "Joint: one optimizer, summed loss"), ("disjoint", "Disjoint: one optimizer per head")],
        help_text="Joint mode uses one learning rate for all heads.",
    )
    epochs = forms.IntegerField()
    batch_size = forms.IntegerField()

    def add_fields(self) -> None:
        self.task_rows: list[int] = []
        self.tasks: list[dict] = []
        for i in range(TRAIN_HEADS_ROWS):
            self.fields[f"task_{i}"] = forms.CharField(
                max_length=63, required=False, label="Task", widget=forms.TextInput(attrs={"placeholder": "task"})
            )
            self.fields[f"dataset_{i}"] = forms.TypedChoiceField(
                coerce=int, required=False, empty_value=None, label="Dataset"
            )
            self.fields[f"head_type_{i}"] = forms.ChoiceField(label="Head", choices=HEAD_TYPES, initial="dense")
            self.fields[f"hidden_{i}"] = forms.CharField(
                required=False, label="Hidden", widget=forms.TextInput(attrs={"placeholder": "64"})
            )
            self.fields[f"lr_{i}"] = forms.FloatField(required=False, label="Learning rate")

    def _field_paths(self) -> dict[str, tuple]:
        rows = {
            f"{prefix}_{i}": ("tasks", *path)
            for prefix, path in self.row_fields.items()
            for i in range(TRAIN_HEADS_ROWS)
        }
        return {**self.spec_fields, **rows}

    def read_rows(self, data: dict) -> None:
        """Keep the filled rows as task entries; remember which row each entry came from."""
        self.task_rows, self.tasks = [], []
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
            entry = {"task": task, "dataset": dataset, "head": head_params(data.get(f"head_type_{i}"), hidden, None)}
            if data.get(f"lr_{i}") is not None:
                entry["learning_rate"] = data[f"lr_{i}"]
            self.task_rows.append(i)
            self.tasks.append(entry)
        if not self.tasks and not self.errors:
            self.add_error(None, "Fill in at least one row: a task and its dataset.")

    def field_for(self, path: tuple) -> str | None:
        if len(path) >= 2 and path[0] == "tasks" and isinstance(path[1], int) and path[1] < len(self.task_rows):
            row, rest = self.task_rows[path[1]], path[2:]
            for length in range(len(rest), 0, -1):
                for prefix, field_path in self.row_fields.items():
                    if rest[:length] == field_path:
                        return f"{prefix}_{row}"
            return None
        return super().field_for(path)

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
    spec_class = FineTuneSpec
    title = "Fine-tune a backbone"
    intro = (
        "Trains a head, then unfreezes the top of the backbone. The result is a new backbone version (child of "
        "this one), a head on it, and a forgetting report for the parent's approved heads; or, with output "
        "'branch', only a head on this backbone that owns the tuned top layers as its branch."
    )
    spec_fields = {
        "backbone": ("backbone",),
        "dataset": ("dataset",),
        "task": ("task",),
        "head_type": ("head", "type"),
        "hidden": ("head", "hidden"),
        "unfreeze_top": ("unfreeze_top",),
        "warmup_epochs": ("warmup_epochs",),
        "epochs": ("epochs",),
        "batch_size": ("batch_size",),
        "learning_rate": ("learning_rate",),
        "finetune_lr_factor": ("finetune_lr_factor",),
        "output": ("output",),
    }
    more_error_fields = {("head",): "head_type"}

    dataset = forms.TypedChoiceField(coerce=int)
    task = forms.CharField(max_length=63, widget=forms.TextInput(attrs={"placeholder": "sentiment"}))
    head_type = head_type_field()
    hidden = hidden_field()
    unfreeze_top = forms.IntegerField()
    warmup_epochs = forms.IntegerField()
    epochs = forms.IntegerField(label="Fine-tuning epochs")
    batch_size = forms.IntegerField()
    learning_rate = forms.FloatField()
    finetune_lr_factor = forms.FloatField(label="Fine-tune LR factor")
    output = forms.ChoiceField(
        label="Result",
        choices=FINE_TUNE_OUTPUT_CHOICES,
        initial="backbone",
        widget=forms.RadioSelect,
        help_text="A branch changes nothing for the backbone's other heads: no new backbone version and no "
        "forgetting report.",
    )

    def clean_hidden(self):
        return parse_hidden(self.cleaned_data.get("hidden", ""))

    def params(self) -> dict:
        data = self.cleaned_data
        return {
            "backbone": data["backbone"],
            "dataset": data["dataset"],
            "task": data["task"].strip(),
            "head": head_params(data["head_type"], data["hidden"], None),
            "unfreeze_top": data["unfreeze_top"],
            "warmup_epochs": data["warmup_epochs"],
            "epochs": data["epochs"],
            "batch_size": data["batch_size"],
            "learning_rate": data["learning_rate"],
            "finetune_lr_factor": data["finetune_lr_factor"],
            "output": data["output"],
        }


class GrowBackboneForm(JobForm):
    spec_class = GrowBackboneSpec
    title = "Grow a backbone"
    intro = (
        "Inserts a layer or widens one without changing what the network computes (verified on probe inputs). "
        "Without training, the parent's approved heads are carried over; with training, they go through a "
        "forgetting report."
    )
    needs_dataset = False
    spec_fields = {
        "backbone": ("backbone",),
        "layer": ("insert", "after_layer"),
        "insert_kind": ("insert", "kind"),
        "units": ("widen", "units"),
        "dataset": ("train", "dataset"),
        "train_epochs": ("train", "epochs"),
        "only_new_layers": ("train", "only_new_layers"),
    }
    more_error_fields = {
        ("widen", "layer"): "layer",
        ("insert",): "insert_kind",
        ("widen",): "units",
        ("train",): "dataset",
    }

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
    units = forms.IntegerField(required=False, label="Widen to units", help_text="Widen only.")
    dataset = forms.TypedChoiceField(
        coerce=int,
        required=False,
        empty_value=None,
        label="Train on dataset",
        help_text="Optional. Leave empty to keep the function exactly (heads are carried automatically).",
    )
    train_epochs = forms.IntegerField(required=False, label="Training epochs")
    only_new_layers = forms.BooleanField(required=False, initial=True, label="Train only the new layers")

    def add_fields(self) -> None:
        layers: dict[str, list[int]] = {}
        for backbone in self.backbones:
            for layer in (backbone.spec or {}).get("layers", []):
                layers.setdefault(layer["name"], []).append(backbone.pk)
        self.fields["layer"].choices = [(name, name) for name in layers]
        self.fields["layer"].widget = FilteredSelect(fits=layers, attrs={"data-filter-by-backbone": ""})
        self.fields["layer"].widget.choices = self.fields["layer"].choices

    def params(self) -> dict:
        data = self.cleaned_data
        params = {"backbone": data["backbone"]}
        if data["change"] == "insert":
            params["insert"] = {"after_layer": data["layer"], "kind": data.get("insert_kind") or None}
        else:
            params["widen"] = {"layer": data["layer"], "units": data.get("units")}
        if data.get("dataset"):
            params["train"] = {
                "dataset": data["dataset"],
                "epochs": data.get("train_epochs"),
                "only_new_layers": bool(data.get("only_new_layers")),
            }
        return params


JOB_FORMS = {form.spec_class.kind: form for form in (TrainHeadForm, TrainHeadsForm, FineTuneForm, GrowBackboneForm)}
