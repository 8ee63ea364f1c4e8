"""The typed parameters of each training job kind, and the head spec they share.

Each field is declared once (training.specs.kit.spec_field): its rule (type, bounds, choices),
default, help and label. The API serializer, the dashboard form (training.forms), the service
(training.services.job_create) and the worker (training.work) all read these classes.
:func:`job_spec_parse` is the one entry point: JSON in, a frozen spec out, or a JobSpecError
naming each bad field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from core.errors import ValidationError
from heads.services import MAX_PROBE_ROW_VALUES, PROBE_SHAPE_EXAMPLE, TASK_SLUG, check_task_slug, probe_shape_parse
from training.specs.kit import (
    NON_FIELD_ERRORS,
    Boolean,
    Choice,
    Errors,
    Id,
    Integer,
    Integers,
    Invalid,
    JobSpecError,
    Name,
    Nested,
    NestedList,
    Number,
    Rule,
    Spec,
    shown,
    spec_field,
)

MAX_SEED = 2**32 - 1
MAX_KERNEL_SIZE = 15
DEFAULT_MLP_HIDDEN = (64,)


@dataclass(frozen=True)
class HeadSpec(Spec):
    """The head a job builds on the backbone's features."""

    type: str = spec_field(
        Choice(dense="Dense (softmax / linear)", mlp="MLP (hidden layers)"),
        "dense",
        doc="'dense': one Dense output layer; 'mlp': hidden ReLU layers first.",
        label="Head",
    )
    hidden: tuple[int, ...] = spec_field(
        Integers(Integer(1, "MODELHUB_MAX_HIDDEN_UNITS"), "MODELHUB_MAX_HIDDEN_LAYERS"),
        (),
        doc="Hidden layer sizes of an 'mlp' head, e.g. [64, 32] (default [64]); a 'dense' head has none.",
        label="Hidden layers",
    )
    dropout: float = spec_field(
        Number(0, 1, open_max=True), 0.0, doc="Dropout rate after each hidden layer of an 'mlp' head, in [0, 1)."
    )
    units: int | None = spec_field(
        Integer(1, "MODELHUB_MAX_HEAD_UNITS"),
        None,
        doc="Output width. Default: the dataset's number of classes (at least that many), or 1 for values.",
    )
    activation: str | None = spec_field(
        Choice("softmax", "sigmoid", "linear"),
        None,
        doc="Output activation. Default: 'softmax' for classes, 'linear' for values.",
    )

    def check(self) -> Errors:
        errors = {}
        if self.type == "dense" and self.hidden:
            errors["hidden"] = ["applies to 'mlp' heads only; use type 'mlp' or leave 'hidden' out."]
        if self.type == "dense" and self.dropout:
            errors["dropout"] = ["applies to 'mlp' heads only (after hidden layers); use type 'mlp' or 0."]
        return errors

    def derive(self) -> Self:
        if self.type == "mlp" and not self.hidden:
            return dataclasses.replace(self, hidden=DEFAULT_MLP_HIDDEN)
        return self

    def for_dataset(self, *, target: str, num_classes: int | None) -> HeadSpec:
        """Return the head with units and activation filled in from the dataset's targets."""
        classes = target == "classes"
        return dataclasses.replace(
            self,
            units=self.units or (num_classes if classes and num_classes else 1),
            activation=self.activation or ("softmax" if classes else "linear"),
        )


@dataclass(frozen=True)
class EarlyStoppingSpec(Spec):
    """Stop training when the validation loss stops improving."""

    patience: int = spec_field(
        Integer(1, "MODELHUB_MAX_EPOCHS"),
        doc="Stop after this many epochs without a better validation loss (the dataset needs x_val, y_val).",
        label="Early stopping patience",
    )


def _epochs(default: int, *, minimum: int = 1, doc: str = "Training epochs.", label: str = "") -> Any:
    return spec_field(Integer(minimum, "MODELHUB_MAX_EPOCHS"), default, doc=doc, label=label)


def _batch_size() -> Any:
    return spec_field(Integer(1, "MODELHUB_MAX_BATCH_SIZE"), 32, doc="Examples per training step.")


def _learning_rate(default: float, doc: str = "Adam learning rate.") -> Any:
    return spec_field(Number(0, "MODELHUB_MAX_LEARNING_RATE", open_min=True), default, doc=doc)


def _id(of: str, what: str, *, label: str = "") -> Any:
    return spec_field(Id(of), doc=what, label=label)


def _task() -> Any:
    return spec_field(
        Name(check_task_slug, pattern=TASK_SLUG.pattern), doc="Task slug of the new head version (created if new)."
    )


def _seed() -> Any:
    return spec_field(Integer(0, MAX_SEED), None, doc="Seed for initialisation and shuffling (reproducible runs).")


def _head() -> Any:
    return spec_field(Nested(HeadSpec), HeadSpec(), doc="The head to build (default: a dense head).")


@dataclass(frozen=True)
class JobSpec(Spec):
    """Base of the job specs: every job runs on a backbone version (evaluate_head: the head's)."""

    kind: ClassVar[str] = ""

    def dataset_ids(self) -> list[int]:
        """Return the datasets the job reads, in order, without repeats."""
        return []


@dataclass(frozen=True)
class TrainHeadSpec(JobSpec):
    """train_head: a new head on the frozen backbone's cached features."""

    kind: ClassVar[str] = "train_head"

    backbone: int = _id("backbone", "Backbone version id (ready, in the job's team).")
    dataset: int = _id("dataset", "Dataset id (ready, in the job's team, inputs fitting the backbone).")
    task: str = _task()
    head: HeadSpec = _head()
    epochs: int = _epochs(5)
    batch_size: int = _batch_size()
    learning_rate: float = _learning_rate(1e-3)
    seed: int | None = _seed()
    early_stopping: EarlyStoppingSpec | None = spec_field(
        Nested(EarlyStoppingSpec), None, doc="{patience}: stop early on the validation loss. Default: all epochs."
    )

    def dataset_ids(self) -> list[int]:
        return [self.dataset]


@dataclass(frozen=True)
class TaskEntrySpec(Spec):
    """One head of a train_heads job."""

    task: str = _task()
    dataset: int = _id("dataset", "Dataset id with this task's labels (all datasets of the job share inputs x).")
    head: HeadSpec = _head()
    learning_rate: float = _learning_rate(1e-3, "Adam learning rate of this head (one rate for all in 'joint').")


@dataclass(frozen=True)
class TrainHeadsSpec(JobSpec):
    """train_heads: several heads in one pass of backbone features."""

    kind: ClassVar[str] = "train_heads"

    backbone: int = _id("backbone", "Backbone version id (ready, in the job's team).")
    tasks: tuple[TaskEntrySpec, ...] = spec_field(
        NestedList(TaskEntrySpec), doc="The heads to train: [{task, dataset, head, learning_rate}, ...]."
    )
    mode: str = spec_field(
        Choice(joint="Joint: one optimizer, summed loss", disjoint="Disjoint: one optimizer per head"),
        "joint",
        doc="'joint': one optimizer on the summed loss (one learning rate); 'disjoint': one optimizer per head.",
    )
    epochs: int = _epochs(5)
    batch_size: int = _batch_size()
    seed: int | None = _seed()

    def check(self) -> Errors:
        errors = {}
        slugs = [entry.task for entry in self.tasks]
        repeated = sorted({slug for slug in slugs if slugs.count(slug) > 1})
        if repeated:
            errors["tasks"] = [f"each task may appear once; repeated: {', '.join(repeated)}."]
        if self.mode == "joint" and len({entry.learning_rate for entry in self.tasks}) > 1:
            errors["mode"] = [
                "joint mode uses one optimizer and one learning rate; use mode 'disjoint' for per-head rates."
            ]
        return errors

    def dataset_ids(self) -> list[int]:
        return list(dict.fromkeys(entry.dataset for entry in self.tasks))


@dataclass(frozen=True)
class FineTuneSpec(JobSpec):
    """fine_tune: warm up a head, then train it with the top of the backbone unfrozen."""

    kind: ClassVar[str] = "fine_tune"

    backbone: int = _id("backbone", "Backbone version id (ready, in the job's team); the parent of the new version.")
    dataset: int = _id("dataset", "Dataset id (ready, in the job's team, inputs fitting the backbone).")
    task: str = _task()
    head: HeadSpec = _head()
    unfreeze_top: int = spec_field(
        Integer(1),
        1,
        doc="How many weight-bearing layers at the top of the backbone to train (at most the backbone's).",
    )
    warmup_epochs: int = _epochs(2, minimum=0, doc="Epochs of head-only training on the frozen backbone first.")
    epochs: int = _epochs(2, doc="Epochs with the top layers unfrozen.", label="Fine-tuning epochs")
    batch_size: int = _batch_size()
    learning_rate: float = _learning_rate(1e-3, "Adam learning rate of the warm-up.")
    finetune_lr_factor: float = spec_field(
        Number(0, 1, open_min=True),
        0.1,
        doc="Learning rate multiplier while unfrozen, in (0, 1].",
        label="Fine-tune LR factor",
    )
    output: str = spec_field(
        Choice(
            backbone="A new backbone version, with the head on it",
            branch="A head that owns the tuned top layers (a branch) on this backbone",
        ),
        "backbone",
        doc="What the tuned top layers become. 'backbone': a new backbone version (child of this one) with the "
        "head on it, and a forgetting report for this one's approved heads. 'branch': no backbone version; the "
        "new head version, on this backbone, owns the tuned top layers as its branch (nothing else changes).",
        label="Result",
    )
    seed: int | None = _seed()

    def dataset_ids(self) -> list[int]:
        return [self.dataset]


@dataclass(frozen=True)
class InsertSpec(Spec):
    """Insert a layer that computes the identity after an existing one."""

    after_layer: str = spec_field(Name(), doc="Name of the backbone layer to insert after.", label="Layer")
    kind: str = spec_field(
        Choice(dense="Dense (identity)", conv="Convolution (identity)", residual="Residual block"),
        doc="'dense' or 'conv' identity layer, or a 'residual' block.",
        label="New layer kind",
    )
    kernel_size: int | None = spec_field(
        Integer(1, MAX_KERNEL_SIZE), None, doc="Odd kernel size of a 'conv' insert (default 3)."
    )
    hidden_units: int | None = spec_field(
        Integer(1, "MODELHUB_MAX_GROWTH_UNITS"),
        None,
        doc="Width of a 'residual' block's first layer (default: its input's width).",
    )

    def check(self) -> Errors:
        errors = {}
        if self.kernel_size is not None and self.kind != "conv":
            errors["kernel_size"] = ["applies to kind 'conv' only."]
        elif self.kernel_size is not None and self.kernel_size % 2 == 0:
            errors["kernel_size"] = [f"must be odd (an identity kernel needs a centre); got {self.kernel_size}."]
        if self.hidden_units is not None and self.kind != "residual":
            errors["hidden_units"] = ["applies to kind 'residual' only."]
        return errors


@dataclass(frozen=True)
class WidenSpec(Spec):
    """Widen a Dense or Conv2D layer, replicating units so the function stays the same."""

    layer: str = spec_field(Name(), doc="Name of the Dense or Conv2D layer to widen.", label="Layer")
    units: int = spec_field(
        Integer(1, "MODELHUB_MAX_GROWTH_UNITS"),
        doc="Its new number of units or filters (more than now).",
        label="Widen to units",
    )


@dataclass(frozen=True)
class GrowTrainSpec(Spec):
    """Train a grown backbone under a temporary classification head (then a forgetting report)."""

    dataset: int = _id(
        "dataset",
        "Classification dataset id (ready, in the job's team, inputs fitting the backbone).",
        label="Train on dataset",
    )
    epochs: int = _epochs(1, label="Training epochs")
    batch_size: int = _batch_size()
    learning_rate: float = _learning_rate(1e-4)
    only_new_layers: bool = spec_field(
        Boolean(),
        True,
        doc="Train only the inserted or widened layers (false: every layer).",
        label="Train only the new layers",
    )


class ProbeShape(Rule):
    """``{input name: [dims of one row]}`` for inputs of open (None) length, read by heads.probe_shapes."""

    def read(self, value: Any) -> dict[str, list[int]] | None:
        try:
            return probe_shape_parse(value) or None
        except ValidationError as exc:
            raise Invalid(exc.message) from None

    def json_schema(self, ref: Any) -> dict:
        dims = {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1, "maxItems": 8}
        return {
            "type": "object",
            "additionalProperties": dims,
            "example": {"token_ids": [128]},
            "description": f"At most {MAX_PROBE_ROW_VALUES:,} values a row, e.g. {PROBE_SHAPE_EXAMPLE}.",
        }


@dataclass(frozen=True)
class GrowBackboneSpec(JobSpec):
    """grow_backbone: insert or widen a layer without changing the function, optionally train."""

    kind: ClassVar[str] = "grow_backbone"

    backbone: int = _id("backbone", "Backbone version id (ready, in the job's team); the parent of the new version.")
    insert: InsertSpec | None = spec_field(Nested(InsertSpec), None, doc="{after_layer, kind}: insert a layer.")
    widen: WidenSpec | None = spec_field(Nested(WidenSpec), None, doc="{layer, units}: widen a layer.")
    train: GrowTrainSpec | None = spec_field(
        Nested(GrowTrainSpec), None, doc="{dataset, ...}: train after growing. Default: keep the function exactly."
    )
    probe_shape: dict[str, list[int]] | None = spec_field(
        ProbeShape(),
        None,
        doc="{input name: [dims of one row]}: the probe rows that check the growth keeps the function, for inputs "
        'of open (None) length, e.g. {"token_ids": [128]}. Default: the length of the training dataset\'s rows '
        "(with 'train'), else the shortest length every layer accepts.",
        label="Probe shape",
    )

    def check(self) -> Errors:
        if (self.insert is None) == (self.widen is None):
            return {
                NON_FIELD_ERRORS: ["give exactly one of 'insert' ({after_layer, kind}) or 'widen' ({layer, units})."]
            }
        return {}

    def dataset_ids(self) -> list[int]:
        return [self.train.dataset] if self.train else []


@dataclass(frozen=True)
class EvaluateHeadSpec(JobSpec):
    """evaluate_head: a head version's metrics on a dataset, through the head's backbone."""

    kind: ClassVar[str] = "evaluate_head"

    head: int = _id("head", "Head version id (in the job's team, validated).")
    dataset: int = _id(
        "dataset",
        "Dataset id (ready, in the job's team, inputs fitting the head's backbone, labels fitting the head's "
        "outputs). Its validation split is used, or all of it when it has none.",
    )
    batch_size: int = spec_field(Integer(1, "MODELHUB_MAX_BATCH_SIZE"), 64, doc="Examples per forward pass.")

    def dataset_ids(self) -> list[int]:
        return [self.dataset]


JOB_SPECS: dict[str, type[JobSpec]] = {
    spec.kind: spec for spec in (TrainHeadSpec, TrainHeadsSpec, FineTuneSpec, GrowBackboneSpec, EvaluateHeadSpec)
}


def job_spec_parse(kind: str, params: Any) -> JobSpec:
    """Return the typed spec of a job of ``kind`` from its JSON parameters, or raise JobSpecError.

    Example:
        >>> job_spec_parse("train_head", {"backbone": 1, "dataset": 2, "task": "sentiment"}).epochs
        5
    """
    if kind not in JOB_SPECS:
        raise JobSpecError({"kind": [f"must be one of {', '.join(JOB_SPECS)}; got {shown(kind)}"]})
    return JOB_SPECS[kind].parse(params)
