"""Typed parameters of training jobs: one spec per job kind, and the head spec they share.

A job's parameters come from three places: the JSON body of ``POST /api/jobs/``, a dashboard
form, and a stored job (retried, or run by a worker). All of them go through
:func:`job_spec_parse`, which returns a frozen dataclass (every field typed, bounded, with its
default filled in) or raises :class:`JobSpecError` naming each bad field, e.g.
``{"head": {"dropout": ["must be a number in [0, 1); got 'x'"]}}``. ``spec.to_params()`` is
the JSON stored on the job; parsing it again gives the same spec.

Here are only the rules that need nothing but the parameters. Rules that need the database
(the dataset is ready and fits the backbone, labels fit the head, a layer exists) run in
``training.services.job_create``, which fails the job at once with what to change.

Bounds that cost resources (epochs, batch size, widths, learning rate) come from the
``MODELHUB_MAX_*`` settings, read each time a spec is parsed. Unknown fields are ignored and
not stored. ``null`` means "not given" (the default applies).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from django.conf import settings

from core.errors import ValidationError
from heads.services import TASK_SLUG, check_task_slug

REQUIRED = dataclasses.MISSING
NON_FIELD_ERRORS = "non_field_errors"
MAX_SEED = 2**32 - 1
MAX_KERNEL_SIZE = 15
MAX_NAME_CHARS = 255
DEFAULT_MLP_HIDDEN = (64,)
FINE_TUNE_OUTPUTS = ("backbone", "branch")

Errors = dict[Any, Any]  # field name (or list index) -> [messages] | nested Errors
SchemaRef = Callable[[type["Spec"]], dict]  # a nested spec -> the schema standing for it (a $ref)


class JobSpecError(ValidationError):
    """Job parameters that cannot be read; ``errors`` names each bad field (a 400, never a 500)."""

    def __init__(self, errors: Errors) -> None:
        self.errors = errors
        super().__init__(f"Invalid job parameters: {describe_errors(errors)}", detail=errors)


def describe_errors(errors: Errors, prefix: str = "") -> str:
    """Flatten errors into one sentence: "head.dropout: must be ...; epochs: must be ..."."""
    parts = []
    for key, value in errors.items():
        path = prefix if key == NON_FIELD_ERRORS else f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            parts.append(describe_errors(value, path))
        else:
            text = " ".join(message.rstrip(".") for message in value)
            parts.append(f"{path}: {text}" if path else text)
    return "; ".join(parts)


class Invalid(Exception):
    """One field's value is wrong (raised by a Rule, collected by Spec.parse)."""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class Bound:
    """A bound of a field: a constant, or a Django setting read when a spec is parsed."""

    constant: float | None = None
    setting: str = ""

    @property
    def value(self) -> float:
        return getattr(settings, self.setting) if self.setting else self.constant

    def __str__(self) -> str:
        value = self.value
        return f"{value:g}" if isinstance(value, float) else str(value)


def limit(value: float | str) -> Bound:
    """Return a bound: a number, or the name of a setting (e.g. "MODELHUB_MAX_EPOCHS")."""
    return Bound(setting=value) if isinstance(value, str) else Bound(constant=value)


# --- Rules: how one field is read ---------------------------------------------------------


class Rule:
    """How one field is read from JSON and written back; ``doc`` says what the field means."""

    doc: str = ""

    def read(self, value: Any) -> Any:
        raise NotImplementedError("subclasses of Rule must provide read()")

    def write(self, value: Any) -> Any:
        return value

    def bounds(self) -> tuple[float | None, float | None]:
        """Return (minimum, maximum) for numbers, for forms' min/max attributes."""
        return None, None

    def json_schema(self, ref: SchemaRef) -> dict:
        """Return the JSON schema (OpenAPI 3.0 dialect) of the values ``read`` accepts.

        ``ref(spec)`` returns the schema (usually a $ref) that stands for a nested spec.
        """
        raise NotImplementedError("subclasses of Rule must provide json_schema()")


class Integer(Rule):
    """A whole number in [minimum, maximum] (JSON 5 or 5.0; not true, not "5")."""

    def __init__(self, minimum: float | str, maximum: float | str | None = None, *, described: str = ""):
        self.minimum, self.maximum = limit(minimum), limit(maximum) if maximum is not None else None
        self.described = described

    def describe(self) -> str:
        if self.described:
            return self.described
        if self.maximum is None:
            return f"a whole number >= {self.minimum}"
        setting = f" ({self.maximum.setting})" if self.maximum.setting else ""
        return f"a whole number in [{self.minimum}, {self.maximum}]{setting}"

    def read(self, value: Any) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise Invalid(f"must be {self.describe()}; got {_shown(value)}")
        if value < self.minimum.value or (self.maximum is not None and value > self.maximum.value):
            raise Invalid(f"must be {self.describe()}; got {value}")
        return value

    def bounds(self) -> tuple[float | None, float | None]:
        return self.minimum.value, self.maximum.value if self.maximum is not None else None

    def json_schema(self, ref: SchemaRef) -> dict:
        schema = {"type": "integer", "minimum": self.minimum.value}
        if self.maximum is not None:
            schema["maximum"] = self.maximum.value
        return schema


class Number(Rule):
    """A finite number between minimum and maximum; each end open or closed."""

    def __init__(self, minimum: float | str, maximum: float | str, *, open_min: bool = False, open_max: bool = False):
        self.minimum, self.maximum = limit(minimum), limit(maximum)
        self.open_min, self.open_max = open_min, open_max

    def describe(self) -> str:
        left, right = "(" if self.open_min else "[", ")" if self.open_max else "]"
        setting = f" ({self.maximum.setting})" if self.maximum.setting else ""
        return f"a number in {left}{self.minimum}, {self.maximum}{right}{setting}"

    def read(self, value: Any) -> float:
        if not _is_number(value) or not math.isfinite(value):
            raise Invalid(f"must be {self.describe()}; got {_shown(value)}")
        low, high = self.minimum.value, self.maximum.value
        too_low = value <= low if self.open_min else value < low
        too_high = value >= high if self.open_max else value > high
        if too_low or too_high:
            raise Invalid(f"must be {self.describe()}; got {value:g}")  # 0 and 0.0 read alike
        return float(value)

    def bounds(self) -> tuple[float | None, float | None]:
        return self.minimum.value, self.maximum.value

    def json_schema(self, ref: SchemaRef) -> dict:
        schema = {"type": "number", "minimum": self.minimum.value, "maximum": self.maximum.value}
        if self.open_min:
            schema["exclusiveMinimum"] = True
        if self.open_max:
            schema["exclusiveMaximum"] = True
        return schema


class Choice(Rule):
    def __init__(self, *options: str):
        self.options = options

    def read(self, value: Any) -> str:
        if value not in self.options:
            raise Invalid(f"must be one of {', '.join(repr(o) for o in self.options)}; got {_shown(value)}")
        return value

    def json_schema(self, ref: SchemaRef) -> dict:
        return {"type": "string", "enum": list(self.options)}


class Boolean(Rule):
    def read(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise Invalid(f"must be true or false; got {_shown(value)}")
        return value

    def json_schema(self, ref: SchemaRef) -> dict:
        return {"type": "boolean"}


class Name(Rule):
    """A non-empty string, e.g. a layer name; ``check`` may refuse it with a message.

    ``pattern`` is the regular expression ``check`` enforces, for the API schema.
    """

    def __init__(self, check: Callable[[str], None] | None = None, *, pattern: str = ""):
        self.check, self.pattern = check, pattern

    def read(self, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise Invalid(f"must be a non-empty string; got {_shown(value)}")
        if len(value) > MAX_NAME_CHARS:
            raise Invalid(f"must be at most {MAX_NAME_CHARS} characters; got {len(value)}")
        if self.check is not None:
            try:
                self.check(value)
            except ValidationError as exc:
                raise Invalid(exc.message) from None
        return value

    def json_schema(self, ref: SchemaRef) -> dict:
        schema = {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS}
        if self.pattern:
            schema["pattern"] = self.pattern
        return schema


class Integers(Rule):
    """A list of whole numbers, each read by ``item``, at most ``max_items`` of them."""

    def __init__(self, item: Integer, max_items: str | int):
        self.item, self.max_items = item, limit(max_items)

    def read(self, value: Any) -> tuple[int, ...]:
        if not isinstance(value, list | tuple):
            raise Invalid(f"must be a list of whole numbers such as [64, 32]; got {_shown(value)}")
        if len(value) > self.max_items.value:
            setting = f" ({self.max_items.setting})" if self.max_items.setting else ""
            raise Invalid(f"must have at most {self.max_items} entries{setting}; got {len(value)}")
        try:
            return tuple(self.item.read(item) for item in value)
        except Invalid as exc:
            raise Invalid(f"each entry {exc}") from None

    def write(self, value: tuple[int, ...]) -> list[int]:
        return list(value)

    def bounds(self) -> tuple[float | None, float | None]:
        return self.item.bounds()

    def json_schema(self, ref: SchemaRef) -> dict:
        return {"type": "array", "items": self.item.json_schema(ref), "maxItems": self.max_items.value}


class Nested(Rule):
    """An object read by another spec (its errors nest under this field's name)."""

    def __init__(self, spec: type[Spec]):
        self.spec = spec

    def read(self, value: Any) -> Spec:
        return self.spec.parse(value)

    def write(self, value: Spec) -> dict:
        return value.to_params()

    def json_schema(self, ref: SchemaRef) -> dict:
        return ref(self.spec)


class NestedList(Rule):
    """A non-empty list of objects, each read by ``spec`` (errors keyed by list index)."""

    def __init__(self, spec: type[Spec]):
        self.spec = spec

    def read(self, value: Any) -> tuple[Spec, ...]:
        if not isinstance(value, list | tuple) or not value:
            raise Invalid(f"must be a non-empty list of objects; got {_shown(value)}")
        items, errors = [], {}
        for index, item in enumerate(value):
            try:
                items.append(self.spec.parse(item))
            except JobSpecError as exc:
                errors[index] = exc.errors
        if errors:
            raise JobSpecError(errors)
        return tuple(items)

    def write(self, value: tuple[Spec, ...]) -> list[dict]:
        return [item.to_params() for item in value]

    def json_schema(self, ref: SchemaRef) -> dict:
        return {"type": "array", "items": ref(self.spec), "minItems": 1}


def spec_field(rule: Rule, default: Any = REQUIRED, *, doc: str) -> Any:
    """Declare a spec field: how it is read (``rule``), its default (none: required), what it means."""
    rule.doc = doc
    return dataclasses.field(default=default, metadata={"rule": rule})


# --- Specs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """Base of every spec: parse from JSON, check cross-field rules, write back to JSON."""

    @classmethod
    def parse(cls, params: Any) -> Self:
        """Return the spec read from ``params`` (a JSON object), or raise JobSpecError."""
        if not isinstance(params, Mapping):
            raise JobSpecError({NON_FIELD_ERRORS: [f"must be an object (JSON {{...}}); got {_shown(params)}"]})
        values, errors = {}, {}
        for field in dataclasses.fields(cls):
            rule: Rule = field.metadata["rule"]
            raw = params.get(field.name)
            if raw is None:
                if field.default is REQUIRED:
                    errors[field.name] = ["This field is required."]
                continue
            try:
                values[field.name] = rule.read(raw)
            except Invalid as exc:
                errors[field.name] = [str(exc)]
            except JobSpecError as exc:
                errors[field.name] = exc.errors
        if errors:
            raise JobSpecError(errors)
        spec = cls(**values)
        problems = spec.check()
        if problems:
            raise JobSpecError(problems)
        return spec.derive()

    def check(self) -> Errors:
        """Return cross-field problems as {field: [message]} (empty when there are none)."""
        return {}

    def derive(self) -> Self:
        """Return the spec with defaults that depend on other fields filled in."""
        return self

    @classmethod
    def json_schema(cls, ref: SchemaRef) -> dict:
        """Return the JSON schema (OpenAPI 3.0 dialect) of the parameters ``parse`` reads.

        Bounds are today's settings. Cross-field rules (``check``) are only in the descriptions.
        """
        properties, required = {}, []
        for field in dataclasses.fields(cls):
            rule: Rule = field.metadata["rule"]
            schema = rule.json_schema(ref)
            if "$ref" in schema:  # OpenAPI 3.0 ignores keywords beside a $ref
                schema = {"allOf": [schema]}
            schema["description"] = rule.doc
            if field.default is REQUIRED:
                required.append(field.name)
            else:
                schema["nullable"] = True  # null means "not given"
                if isinstance(field.default, bool | int | float | str):
                    schema["default"] = field.default
            properties[field.name] = schema
        schema = {"type": "object", "description": (cls.__doc__ or "").strip(), "properties": properties}
        if required:
            schema["required"] = required
        return schema

    def to_params(self) -> dict:
        """Return the spec as the JSON stored on the job (fields left unset are left out)."""
        params = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None:
                params[field.name] = field.metadata["rule"].write(value)
        return params

    @classmethod
    def rule(cls, path: tuple[str, ...] | str) -> Rule:
        """Return the rule of a field, nested ones by path: ``TrainHeadSpec.rule(("head", "dropout"))``."""
        path = (path,) if isinstance(path, str) else path
        spec: type[Spec] = cls
        for name in path[:-1]:
            spec = spec.rule(name).spec
        return {field.name: field.metadata["rule"] for field in dataclasses.fields(spec)}[path[-1]]

    @classmethod
    def default(cls, path: tuple[str, ...] | str) -> Any:
        """Return the default of a field (nested ones by path), or None when it has none."""
        path = (path,) if isinstance(path, str) else path
        spec: type[Spec] = cls
        for name in path[:-1]:
            spec = spec.rule(name).spec
        field = {field.name: field for field in dataclasses.fields(spec)}[path[-1]]
        return None if field.default is REQUIRED else field.default


@dataclass(frozen=True)
class HeadSpec(Spec):
    """The head a job builds on the backbone's features."""

    type: str = spec_field(
        Choice("dense", "mlp"), "dense", doc="'dense': one Dense output layer; 'mlp': hidden ReLU layers first."
    )
    hidden: tuple[int, ...] = spec_field(
        Integers(Integer(1, "MODELHUB_MAX_HIDDEN_UNITS"), "MODELHUB_MAX_HIDDEN_LAYERS"),
        (),
        doc="Hidden layer sizes of an 'mlp' head, e.g. [64, 32] (default [64]); a 'dense' head has none.",
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
    )


def _epochs(default: int, *, minimum: int = 1, doc: str = "Training epochs.") -> Any:
    return spec_field(Integer(minimum, "MODELHUB_MAX_EPOCHS"), default, doc=doc)


def _batch_size() -> Any:
    return spec_field(Integer(1, "MODELHUB_MAX_BATCH_SIZE"), 32, doc="Examples per training step.")


def _learning_rate(default: float, doc: str = "Adam learning rate.") -> Any:
    return spec_field(Number(0, "MODELHUB_MAX_LEARNING_RATE", open_min=True), default, doc=doc)


def _id(what: str) -> Any:
    return spec_field(Integer(1, described="an id (a positive whole number)"), doc=what)


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

    backbone: int = _id("Backbone version id (ready, in the job's team).")
    dataset: int = _id("Dataset id (ready, in the job's team, inputs fitting the backbone).")
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
    dataset: int = _id("Dataset id with this task's labels (all datasets of the job share inputs x).")
    head: HeadSpec = _head()
    learning_rate: float = _learning_rate(1e-3, "Adam learning rate of this head (one rate for all in 'joint').")


@dataclass(frozen=True)
class TrainHeadsSpec(JobSpec):
    """train_heads: several heads in one pass of backbone features."""

    kind: ClassVar[str] = "train_heads"

    backbone: int = _id("Backbone version id (ready, in the job's team).")
    tasks: tuple[TaskEntrySpec, ...] = spec_field(
        NestedList(TaskEntrySpec), doc="The heads to train: [{task, dataset, head, learning_rate}, ...]."
    )
    mode: str = spec_field(
        Choice("joint", "disjoint"),
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

    backbone: int = _id("Backbone version id (ready, in the job's team); the parent of the new version.")
    dataset: int = _id("Dataset id (ready, in the job's team, inputs fitting the backbone).")
    task: str = _task()
    head: HeadSpec = _head()
    unfreeze_top: int = spec_field(
        Integer(1),
        1,
        doc="How many weight-bearing layers at the top of the backbone to train (at most the backbone's).",
    )
    warmup_epochs: int = _epochs(2, minimum=0, doc="Epochs of head-only training on the frozen backbone first.")
    epochs: int = _epochs(2, doc="Epochs with the top layers unfrozen.")
    batch_size: int = _batch_size()
    learning_rate: float = _learning_rate(1e-3, "Adam learning rate of the warm-up.")
    finetune_lr_factor: float = spec_field(
        Number(0, 1, open_min=True), 0.1, doc="Learning rate multiplier while unfrozen, in (0, 1]."
    )
    output: str = spec_field(
        Choice(*FINE_TUNE_OUTPUTS),
        "backbone",
        doc="What the tuned top layers become. 'backbone': a new backbone version (child of this one) with the "
        "head on it, and a forgetting report for this one's approved heads. 'branch': no backbone version; the "
        "new head version, on this backbone, owns the tuned top layers as its branch (nothing else changes).",
    )
    seed: int | None = _seed()

    def dataset_ids(self) -> list[int]:
        return [self.dataset]


@dataclass(frozen=True)
class InsertSpec(Spec):
    """Insert a layer that computes the identity after an existing one."""

    after_layer: str = spec_field(Name(), doc="Name of the backbone layer to insert after.")
    kind: str = spec_field(
        Choice("dense", "conv", "residual"), doc="'dense' or 'conv' identity layer, or a 'residual' block."
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

    layer: str = spec_field(Name(), doc="Name of the Dense or Conv2D layer to widen.")
    units: int = spec_field(
        Integer(1, "MODELHUB_MAX_GROWTH_UNITS"), doc="Its new number of units or filters (more than now)."
    )


@dataclass(frozen=True)
class GrowTrainSpec(Spec):
    """Train a grown backbone under a temporary classification head (then a forgetting report)."""

    dataset: int = _id("Classification dataset id (ready, in the job's team, inputs fitting the backbone).")
    epochs: int = _epochs(1)
    batch_size: int = _batch_size()
    learning_rate: float = _learning_rate(1e-4)
    only_new_layers: bool = spec_field(
        Boolean(), True, doc="Train only the inserted or widened layers (false: every layer)."
    )


@dataclass(frozen=True)
class GrowBackboneSpec(JobSpec):
    """grow_backbone: insert or widen a layer without changing the function, optionally train."""

    kind: ClassVar[str] = "grow_backbone"

    backbone: int = _id("Backbone version id (ready, in the job's team); the parent of the new version.")
    insert: InsertSpec | None = spec_field(Nested(InsertSpec), None, doc="{after_layer, kind}: insert a layer.")
    widen: WidenSpec | None = spec_field(Nested(WidenSpec), None, doc="{layer, units}: widen a layer.")
    train: GrowTrainSpec | None = spec_field(
        Nested(GrowTrainSpec), None, doc="{dataset, ...}: train after growing. Default: keep the function exactly."
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

    head: int = _id("Head version id (in the job's team, validated).")
    dataset: int = _id(
        "Dataset id (ready, in the job's team, inputs fitting the head's backbone, labels fitting the head's "
        "outputs). Its validation split is used, or all of it when it has none."
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
        raise JobSpecError({"kind": [f"must be one of {', '.join(JOB_SPECS)}; got {_shown(kind)}"]})
    return JOB_SPECS[kind].parse(params)


# --- Reading stored params tolerantly -------------------------------------------------------


def _stored_id(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def stored_backbone_id(params: Any) -> int | None:
    """Return the backbone id of a stored job's params, or None; never raises.

    Jobs stored before the specs existed may hold anything ({"backbone": "abc", "head": 3}), and
    pages listing them must still render.
    """
    return _stored_id(params.get("backbone")) if isinstance(params, Mapping) else None


def stored_dataset_ids(params: Any) -> set[int]:
    """Return the dataset ids a stored job's params name (any shape of params; never raises)."""
    if not isinstance(params, Mapping):
        return set()
    found = [params.get("dataset")]
    train = params.get("train")
    if isinstance(train, Mapping):
        found.append(train.get("dataset"))
    tasks = params.get("tasks")
    if isinstance(tasks, list):
        found += [entry.get("dataset") for entry in tasks if isinstance(entry, Mapping)]
    return {i for i in map(_stored_id, found) if i is not None}


def stored_summary(params: Any) -> str:
    """Return what a stored job works on, for lists ("quadrant", "a, b", "insert after hidden")."""
    if not isinstance(params, Mapping):
        return ""
    if _text(params.get("task")):
        return params["task"]
    tasks = params.get("tasks")
    if isinstance(tasks, list):
        names = [_text(entry.get("task")) for entry in tasks if isinstance(entry, Mapping)]
        return ", ".join(name for name in names if name)
    for key, verb, field in (("insert", "insert after", "after_layer"), ("widen", "widen", "layer")):
        change = params.get(key)
        if isinstance(change, Mapping) and _text(change.get(field)):
            return f"{verb} {change[field]}"
    return ""


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
