"""The typed spec of an export request, read once and used by the API, the dashboard form and the service.

``ExportSpec.parse`` reads ``{"format", "quantization"}`` from JSON or a form; every bad field is
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
    """What to export: the format ("onnx" | "litert") and the quantization ("none" | "float16" | "dynamic_int8")."""

    format: str
    quantization: str = DEFAULT_QUANTIZATION

    @classmethod
    def parse(cls, data: Any) -> ExportSpec:
        """Return the spec read from a JSON object or form data, or raise ValidationError naming each bad field.

        Example:
            >>> ExportSpec.parse({"format": "onnx"})
            ExportSpec(format='onnx', quantization='none')
        """
        if not isinstance(data, Mapping):
            raise ValidationError(
                f'An export request must be an object such as {{"format": "onnx", "quantization": "none"}}; '
                f"received {_shown(data)}."
            )
        errors: dict[str, list[str]] = {}
        fmt = _choice(data, "format", FORMATS, None, errors)
        quantization = _choice(data, "quantization", QUANTIZATIONS, DEFAULT_QUANTIZATION, errors)
        if fmt == "onnx" and quantization not in (None, DEFAULT_QUANTIZATION):
            errors["quantization"] = [
                f"ONNX is exported as float32: expected 'none', received {_shown(quantization)}. Quantized exports "
                "are LiteRT's: use format 'litert'."
            ]
        if data.get("dataset") not in (None, ""):
            errors["dataset"] = [
                "exports do not take a dataset yet: leave it out. The report gives the argmax agreement on the "
                "verification rows of every task."
            ]
        if errors:
            described = "; ".join(f"{name}: {' '.join(messages)}" for name, messages in errors.items())
            raise ValidationError(f"Invalid export request: {described}", detail=errors)
        return cls(format=fmt, quantization=quantization)
