"""The column mapping of a table dataset (CSV, JSON Lines, Parquet): the `columns` form field.

A team's table names its columns its own way; the mapping says which columns feed which
backbone input, which holds the label and which rows are held out for validation:

    {"inputs": {"text": "review"}, "label": "sentiment", "validation": {"fraction": 0.1}}

It is parsed here once, at upload (a malformed mapping is a 400 naming the field), stored on the
dataset normalized, and read again by the worker (training.work.tables), which checks it against
the file's columns. Every part is optional: without `inputs`, a table of `label` and exactly
one other column uses that column as the single input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.errors import ValidationError
from core.json_bounded import json_loads_bounded
from training.specs.kit import (
    Choice,
    Integer,
    Invalid,
    JobSpecError,
    Name,
    Nested,
    Number,
    Rule,
    SchemaRef,
    Spec,
    describe_errors,
    shown,
    spec_field,
)

MAX_COLUMNS_JSON_CHARS = 64 * 1024
MAX_COLUMNS_JSON_DEPTH = 4  # {"inputs": {"x": ["a", "b"]}} is 3 deep
MAX_INPUTS = 64
MAX_COLUMNS_PER_INPUT = 4096


def _column_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"{where} must be a column name (a non-empty string); got {shown(value)}")
    return value


def _column_or_columns(value: Any, where: str) -> str | list[str]:
    if isinstance(value, list):
        if not value or len(value) > MAX_COLUMNS_PER_INPUT:
            raise Invalid(f"{where} must list 1 to {MAX_COLUMNS_PER_INPUT} numeric columns; got {len(value)}")
        return [_column_name(item, f"{where}[{index}]") for index, item in enumerate(value)]
    return _column_name(value, where)


class InputsRule(Rule):
    """Which columns feed the inputs: a column, a list of numeric columns, or {input name: column(s)}."""

    def read(self, value: Any) -> str | list[str] | dict[str, str | list[str]]:
        if isinstance(value, dict):
            if not value or len(value) > MAX_INPUTS:
                raise Invalid(f"must map 1 to {MAX_INPUTS} input names to columns; got {len(value)} entries")
            return {
                _column_name(name, "an input name"): _column_or_columns(column, f"input '{name}'")
                for name, column in value.items()
            }
        return _column_or_columns(value, "the single input")

    def json_schema(self, ref: SchemaRef) -> dict:
        columns = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
        return {"oneOf": [*columns["oneOf"], {"type": "object", "additionalProperties": columns}]}


class Scalar(Rule):
    """A string, number or boolean (a cell value to compare with)."""

    def read(self, value: Any) -> str | int | float | bool:
        if not isinstance(value, str | int | float | bool):
            raise Invalid(f"must be a string, number or boolean; got {shown(value)}")
        return value

    def json_schema(self, ref: SchemaRef) -> dict:
        return {"oneOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}


@dataclass(frozen=True)
class ValidationSplitSpec(Spec):
    """Which rows are held out: a seeded random fraction, or the rows where a column has a value."""

    fraction: float | None = spec_field(
        Number(0, 1, open_min=True, open_max=True), None, doc="Hold out this fraction of rows, e.g. 0.1."
    )
    seed: int = spec_field(Integer(0, 2**31 - 1), 0, doc="Seed of the random fraction (the same rows every time).")
    column: str | None = spec_field(Name(), None, doc="Hold out the rows whose `column` equals `value`.")
    value: Any = spec_field(Scalar(), None, doc='The value of `column` marking validation rows, e.g. "val".')

    def check(self) -> dict:
        if (self.fraction is None) == (self.column is None):
            return {"fraction": ["give either 'fraction' or 'column' with 'value', not both or neither"]}
        if self.column is not None and self.value is None:
            return {"value": ["is required with 'column' (the value marking validation rows)"]}
        return {}


@dataclass(frozen=True)
class ColumnsSpec(Spec):
    """How a table's columns are used: inputs, label, validation rows and the order of class names."""

    inputs: Any = spec_field(
        InputsRule(),
        None,
        doc="{input name: column} (names are the backbone's input names), or one column for a single input; "
        "a list of numeric columns makes one vector input. Default: the one column besides the label.",
    )
    label: str = spec_field(Name(), "label", doc="The column holding the labels (default 'label').")
    validation: ValidationSplitSpec | None = spec_field(
        Nested(ValidationSplitSpec), None, doc="Which rows are held out for validation (default: none)."
    )
    label_order: str = spec_field(
        Choice("sorted", "first_seen"),
        "sorted",
        doc="Class names become ids in sorted order (default) or in the order they first appear.",
    )

    def check(self) -> dict:
        used = _columns_of(self.inputs)
        if self.label in used:
            return {"label": [f"column '{self.label}' is also an input; the label must be its own column"]}
        if self.validation and self.validation.column and self.validation.column in used:
            return {"validation": {"column": [f"column '{self.validation.column}' is also an input"]}}
        return {}


def _columns_of(inputs: Any) -> list[str]:
    if inputs is None:
        return []
    values = inputs.values() if isinstance(inputs, dict) else [inputs]
    return [column for value in values for column in (value if isinstance(value, list) else [value])]


def columns_parse(raw: str | dict | None) -> dict:
    """Return the normalized mapping from the `columns` form field (JSON text), or raise a 400.

    Example:
        >>> columns_parse('{"inputs": "review", "label": "sentiment"}')
        {'inputs': 'review', 'label': 'sentiment', 'label_order': 'sorted'}
    """
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}
    if isinstance(raw, str):
        if len(raw) > MAX_COLUMNS_JSON_CHARS:
            raise ValidationError(f"'columns' is {len(raw):,} characters; at most {MAX_COLUMNS_JSON_CHARS:,}.")
        try:
            raw = json_loads_bounded(raw, max_depth=MAX_COLUMNS_JSON_DEPTH, what="'columns' as a JSON object")
        except ValidationError as exc:
            raise ValidationError(
                f"'columns' must be a JSON object such as "
                f'{{"inputs": {{"text": "review"}}, "label": "sentiment"}}; {exc.message}',
                detail={"columns": [exc.message]},
            ) from None
    try:
        return ColumnsSpec.parse(raw).to_params()
    except JobSpecError as exc:
        raise ValidationError(
            f"Invalid 'columns': {describe_errors(exc.errors, 'columns')}.", detail={"columns": exc.errors}
        ) from None


def columns_read(stored: dict) -> ColumnsSpec:
    """Return the spec of a stored (already normalized) mapping; {} gives the defaults."""
    return ColumnsSpec.parse(stored or {})
