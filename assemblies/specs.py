"""The typed spec of an export request, read once and used by the API, the dashboard form and the service.

``ExportSpec.parse`` reads ``{"format", "quantization", "dataset"}`` from JSON or a form; every bad field is
named in one 400 (core.errors.ValidationError, ``detail`` by field) saying what was received and
what is accepted. Unknown fields are ignored, as in the other request specs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from assemblies.models import AssemblyExport
from core.errors import ValidationError

FORMATS: tuple[str, ...] = tuple(AssemblyExport.Format.values)
QUANTIZATIONS: tuple[str, ...] = tuple(AssemblyExport.Quantization.values)
DEFAULT_QUANTIZATION = AssemblyExport.Quantization.NONE.value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _choice(data: Mapping, name: str, choices: tuple[str, ...], default: str | None, errors: dict) -> str | None:
    raw = data.get(name)
    if raw is None or raw == "":
        if default is None:
            errors[name] = [f"This field is required: one of {', '.join(choices)}."]
        return default
    if not isinstance(raw, str) or raw.strip().lower() not in choices:
        errors[name] = [f"must be one of {', '.join(choices)}; received {_shown(raw)}."]
        return None
    return raw.strip().lower()


@dataclass(frozen=True)
class ExportSpec:
    """What to export: the format ("onnx" | "litert"), the quantization ("none" | "float16" | "dynamic_int8")
    and, optionally, the id of a dataset to report the export's argmax agreement on."""

    format: str
    quantization: str = DEFAULT_QUANTIZATION
    dataset: int | None = None

    @classmethod
    def parse(cls, data: Any) -> ExportSpec:
        """Return the spec read from a JSON object or form data, or raise ValidationError naming each bad field.

        Example:
            >>> ExportSpec.parse({"format": "onnx"})
            ExportSpec(format='onnx', quantization='none', dataset=None)
        """
        if not isinstance(data, Mapping):
            raise ValidationError(
                f'An export request must be an object such as {{"format": "onnx", "quantization": "none"}}; '
                f"received {_shown(data)}."
            )
        errors: dict[str, list[str]] = {}
        fmt = _choice(data, "format", FORMATS, None, errors)
        quantization = _choice(data, "quantization", QUANTIZATIONS, DEFAULT_QUANTIZATION, errors)
        dataset = _dataset_id(data.get("dataset"), errors)
        if errors:
            described = "; ".join(f"{name}: {' '.join(messages)}" for name, messages in errors.items())
            raise ValidationError(f"Invalid export request: {described}", detail=errors)
        return cls(format=fmt, quantization=quantization, dataset=dataset)


def _dataset_id(raw: Any, errors: dict) -> int | None:
    """Return the dataset id named in the request (None when left out); a bad one is named in ``errors``."""
    if raw is None or raw == "":
        return None
    text = raw.strip() if isinstance(raw, str) else raw
    if isinstance(text, str) and text.isdigit():
        text = int(text)
    if isinstance(text, bool) or not isinstance(text, int) or text < 1:
        errors["dataset"] = [
            f"must be the id of one of the team's ready datasets (a positive integer, GET /api/datasets/); "
            f"received {_shown(raw)}. Leave it out to report on the verification rows only."
        ]
        return None
    return text
