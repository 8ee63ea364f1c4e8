"""Dashboard job forms made from the typed specs: each form lists spec fields, never redeclares them.

A job form names its spec and the spec fields it shows, in order (``layout``: dotted paths such
as "head.dropout", with the form field's name where it differs). Every Django field is made
here from the spec's one declaration (training.specs.kit.spec_field): its type, default, bounds
(HTML min/max), choices with their labels, help and label. The form's data becomes the job's
JSON params (``params()``), which job_spec_parse reads as the API's body is read, and the
spec's errors land on the form field they belong to. A form adds only what the API does not
have: which rows it offers (backbones, datasets, layers) and switches such as "insert or widen".
"""

from dataclasses import dataclass
from typing import Any

from django import forms
from django.forms.utils import pretty_name

from training.specs import NON_FIELD_ERRORS, JobSpec, JobSpecError, job_spec_parse
from training.specs.kit import REQUIRED, Boolean, Choice, Id, Integer, Integers, Name, Number, Rule


@dataclass(frozen=True)
class FormField:
    """A form field standing for the spec field at ``path`` ("head.dropout").

    Args:
        path: the spec field, nested ones by dots.
        name: the form field's name (default: the path's last part).
        when: read only when another form field has a value: ("head_type", "mlp"), or a name
            alone for "is filled". A field read only sometimes is optional.
        help: help text where the spec's doc does not suit a form (e.g. what a list offers).
        placeholder: an example shown in an empty text box.
        radio: show a choice as radio buttons.
    """

    path: str
    name: str = ""
    when: tuple[str, str] | str = ""
    help: str = ""
    placeholder: str = ""
    radio: bool = False

    @property
    def field_name(self) -> str:
        return self.name or self.path.rsplit(".", 1)[-1]

    @property
    def spec_path(self) -> tuple[str, ...]:
        return tuple(self.path.split("."))


@dataclass(frozen=True)
class Rows:
    """Repeated rows for a list of objects in the spec (train_heads' "tasks").

    Each row's form fields are named ``<name>_<row>``; ``fields`` are relative to one list item.
    A row is used when one of ``needs`` is filled, and then needs them all; blank rows are ignored.
    """

    path: str
    fields: tuple[FormField, ...]
    needs: tuple[str, str]
    count: int = 4


class SizesField(forms.CharField):
    """Whole numbers typed as "64, 32" (or "[64, 32]"); their bounds are the spec's."""

    def to_python(self, value: Any) -> list[int]:
        raw = (super().to_python(value) or "").strip().strip("[]")
        if not raw:
            return []
        try:
            return [int(part) for part in raw.replace(" ", ",").split(",") if part.strip()]
        except ValueError:
            raise forms.ValidationError(f"Hidden layer sizes are whole numbers such as '64, 32'; got {raw!r}.")


def _bounded(field: forms.Field, rule: Rule) -> forms.Field:
    low, high = rule.bounds()
    if low is not None:
        field.widget.attrs["min"] = low
    if high is not None:
        field.widget.attrs["max"] = high
    return field


def _text_attrs(declared: FormField) -> dict:
    attrs = {"autocomplete": "off"}
    if declared.placeholder:
        attrs["placeholder"] = declared.placeholder
    return attrs


def form_field(spec: type[JobSpec], declared: FormField, *, required: bool) -> forms.Field:
    """Return the Django field for one spec field: its type, default, bounds, choices, help and label."""
    path = declared.spec_path
    rule, default = spec.rule(path), spec.default(path)
    common = {
        "required": required,
        "label": rule.label or pretty_name(path[-1]),
        "help_text": declared.help or rule.doc,
    }
    if isinstance(rule, Id):  # the form offers the rows of kind `of` (JobForm fills them in)
        field = forms.TypedChoiceField(coerce=int, empty_value=None, **common)
        field.of = rule.of
        return field
    if isinstance(rule, Integer):
        return _bounded(forms.IntegerField(initial=default, **common), rule)
    if isinstance(rule, Number):
        return _bounded(forms.FloatField(initial=default, **common), rule)
    if isinstance(rule, Choice):
        widget = forms.RadioSelect if declared.radio else forms.Select
        return forms.ChoiceField(choices=list(rule.labels.items()), initial=default, widget=widget, **common)
    if isinstance(rule, Boolean):
        return forms.BooleanField(initial=default, **{**common, "required": False})
    if isinstance(rule, Name):
        return forms.CharField(widget=forms.TextInput(attrs=_text_attrs(declared)), **common)
    if isinstance(rule, Integers):
        return SizesField(widget=forms.TextInput(attrs=_text_attrs(declared)), **common)
    raise TypeError(f"{spec.__name__}.{declared.path} ({type(rule).__name__}) has no form field; list its parts.")


def always_given(spec: type[JobSpec], declared: FormField) -> bool:
    """Whether the form must have a value: the spec needs one, or shows its default to keep.

    Fields read only sometimes (``when``), inside an optional object (early_stopping, train),
    or without a default to show (seed, head units, hidden sizes) are optional.
    """
    path = declared.spec_path
    if declared.when or any(spec.field(path[:length]).default is None for length in range(1, len(path))):
        return False
    default = spec.field(path).default
    return default is REQUIRED or (isinstance(default, int | float | str) and not isinstance(default, bool))


def _read(declared: FormField, data: dict, suffix: str = "") -> bool:
    """Whether ``declared`` applies to this submission (its ``when`` holds)."""
    if not declared.when:
        return True
    if isinstance(declared.when, str):
        return data.get(declared.when + suffix) not in (None, "", [])
    other, value = declared.when
    return data.get(other + suffix) == value


def _put(params: dict, path: tuple[str, ...], value: Any) -> None:
    for name in path[:-1]:
        params = params.setdefault(name, {})
    params[path[-1]] = value


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


class SpecForm(forms.Form):
    """A form whose fields are ``layout`` (and ``repeated`` rows) of ``spec_class``.

    ``layout`` items are FormFields, or a path alone. Fields declared on a subclass in Django's
    way are the form's own (not job parameters); they come first unless ``field_order`` says
    otherwise. Once the form is valid, ``form.spec`` is the parsed spec.
    """

    spec_class: type[JobSpec] = JobSpec
    layout: tuple[FormField, ...] = ()
    repeated: Rows | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.layout = tuple(FormField(item) if isinstance(item, str) else item for item in cls.layout)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.spec: JobSpec | None = None
        self.used_rows: list[int] = []  # the row each spec list entry came from
        for declared in self.layout:
            if declared.field_name not in self.fields:  # a field may stand for two paths ("layer")
                required = always_given(self.spec_class, declared)
                self.fields[declared.field_name] = form_field(self.spec_class, declared, required=required)
        if self.repeated is not None:
            item = self.spec_class.rule(self.repeated.path).spec
            for row in range(self.repeated.count):
                for declared in self.repeated.fields:
                    self.fields[f"{declared.field_name}_{row}"] = form_field(item, declared, required=False)
        self.order_fields(self.field_order)

    @property
    def kind(self) -> str:
        return self.spec_class.kind

    def params(self) -> dict:
        """Return the job's parameters (the JSON the API takes) from the cleaned fields.

        A field left empty is left out, so the spec's default applies as in the API.
        """
        data, params = self.cleaned_data, {}
        for declared in self.layout:
            if _read(declared, data):
                value = data.get(declared.field_name)
                if value not in (None, "", []):
                    _put(params, declared.spec_path, value)
        if self.repeated is not None:
            params[self.repeated.path] = [self._row_params(row) for row in self.used_rows]
        return params

    def _row_params(self, row: int) -> dict:
        data, entry = self.cleaned_data, {}
        for declared in self.repeated.fields:
            value = data.get(f"{declared.field_name}_{row}")
            if _read(declared, data, f"_{row}") and value not in (None, "", []):
                _put(entry, declared.spec_path, value)
        return entry

    def _pick_rows(self, data: dict) -> None:
        """Keep the rows with any of ``rows.needs`` filled; each needs them all."""
        first, second = self.repeated.needs
        self.used_rows = []
        for row in range(self.repeated.count):
            filled = {name: data.get(f"{name}_{row}") not in (None, "") for name in self.repeated.needs}
            if not any(filled.values()):
                continue
            if not all(filled.values()):
                missing = next(name for name, given in filled.items() if not given)
                self.add_error(f"{missing}_{row}", f"Give both a {first} and a {second}.")
                continue
            self.used_rows.append(row)
        if not self.used_rows and not self.errors:
            self.add_error(None, f"Fill in at least one row: a {first} and its {second}.")

    def clean(self):
        data = super().clean()
        if self.repeated is not None:
            self._pick_rows(data)
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
        """Return the form field showing errors of the spec field at ``path``, or None.

        The field of the longest matching path wins; an error on a whole object (say "head")
        goes to the first field inside it. Errors of a row go to that row's fields.
        """
        declared, path = self.layout, tuple(path)
        if self.repeated is not None and path[:1] == (self.repeated.path,) and len(path) > 1:
            if not isinstance(path[1], int) or path[1] >= len(self.used_rows):
                return None
            declared, suffix, path = self.repeated.fields, f"_{self.used_rows[path[1]]}", path[2:]
        else:
            suffix = ""
        for length in range(len(path), 0, -1):
            exact = [field for field in declared if field.spec_path == path[:length]]
            inside = [field for field in declared if field.spec_path[:length] == path[:length]]
            if exact or inside:
                return (exact or inside)[0].field_name + suffix
        return None
