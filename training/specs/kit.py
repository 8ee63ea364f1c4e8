"""The field kit of the job specs: how a field is read (Rules), declared (spec_field) and parsed.

A spec is a frozen dataclass whose fields are declared once with :func:`spec_field`: the rule
that reads the value (its type, bounds and choices), its default, the help text and the label
the dashboard shows. :class:`Spec` parses JSON into it (every bad field named in a
:class:`JobSpecError`, a 400), writes it back (``to_params``) and describes it: the API's JSON
schema (``json_schema``) and the dashboard's job forms (training.form_kit reads ``rule`` and
``default``) come from these declarations. The job specs themselves are training.specs.jobs.

Bounds that cost resources come from the ``MODELHUB_*`` settings, read each time a spec is
parsed. Unknown fields are ignored and not stored. ``null`` means "not given" (the default).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Self

from django.conf import settings

from core.errors import ValidationError

REQUIRED = dataclasses.MISSING
NON_FIELD_ERRORS = "non_field_errors"
MAX_NAME_CHARS = 255

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


def shown(value: Any) -> str:
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
    """How one field is read from JSON and written back.

    ``doc`` says what the field means (the API schema's description and the form's help);
    ``label`` names it on the dashboard (default: from the field's name). spec_field sets both.
    """

    doc: str = ""
    label: str = ""

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
            raise Invalid(f"must be {self.describe()}; got {shown(value)}")
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


class Id(Integer):
    """The id of a row the job reads; ``of`` names its kind ("backbone", "dataset", "head").

    The dashboard offers the rows of that kind as choices; the API takes a positive integer.
    """

    def __init__(self, of: str):
        super().__init__(1, described="an id (a positive whole number)")
        self.of = of


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
            raise Invalid(f"must be {self.describe()}; got {shown(value)}")
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
    """One of a few strings. ``Choice(dense="Dense layer", mlp="MLP")`` also gives the labels forms show."""

    def __init__(self, *options: str, **labelled: str):
        self.options = (*options, *labelled)
        self.labels = {option: labelled.get(option, option) for option in self.options}

    def read(self, value: Any) -> str:
        if value not in self.options:
            raise Invalid(f"must be one of {', '.join(repr(o) for o in self.options)}; got {shown(value)}")
        return value

    def json_schema(self, ref: SchemaRef) -> dict:
        return {"type": "string", "enum": list(self.options)}


class Boolean(Rule):
    def read(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise Invalid(f"must be true or false; got {shown(value)}")
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
            raise Invalid(f"must be a non-empty string; got {shown(value)}")
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
            raise Invalid(f"must be a list of whole numbers such as [64, 32]; got {shown(value)}")
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
            raise Invalid(f"must be a non-empty list of objects; got {shown(value)}")
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


def spec_field(rule: Rule, default: Any = REQUIRED, *, doc: str, label: str = "") -> Any:
    """Declare a spec field once: how it is read (``rule``: type, bounds, choices), its default
    (none: required), what it means (``doc``) and, where its name does not say it, its ``label``."""
    rule.doc, rule.label = doc, label
    return dataclasses.field(default=default, metadata={"rule": rule})


# --- Specs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """Base of every spec: parse from JSON, check cross-field rules, write back to JSON."""

    @classmethod
    def parse(cls, params: Any) -> Self:
        """Return the spec read from ``params`` (a JSON object), or raise JobSpecError."""
        if not isinstance(params, Mapping):
            raise JobSpecError({NON_FIELD_ERRORS: [f"must be an object (JSON {{...}}); got {shown(params)}"]})
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
    def field(cls, path: tuple[str, ...] | str) -> dataclasses.Field:
        """Return the dataclass field, nested ones by path: ``TrainHeadSpec.field(("head", "dropout"))``."""
        path = (path,) if isinstance(path, str) else path
        spec: type[Spec] = cls
        for name in path[:-1]:
            spec = spec.rule(name).spec
        return {field.name: field for field in dataclasses.fields(spec)}[path[-1]]

    @classmethod
    def rule(cls, path: tuple[str, ...] | str) -> Rule:
        """Return the rule of a field, nested ones by path: ``TrainHeadSpec.rule(("head", "dropout"))``."""
        return cls.field(path).metadata["rule"]

    @classmethod
    def default(cls, path: tuple[str, ...] | str) -> Any:
        """Return the default of a field (nested ones by path), or None when it has none."""
        default = cls.field(path).default
        return None if default is REQUIRED else default
