"""Small display filters for model specs: tensor shapes and status labels."""

from django import template

register = template.Library()


@register.filter
def shape(value) -> str:
    """Format a shape without the batch dimension as a tuple: [8] -> "(8,)", [None, 4] -> "(None, 4)"."""
    if value in (None, ""):
        return "—"
    if not isinstance(value, list | tuple):
        return str(value)
    if value and isinstance(value[0], list | tuple):
        return ", ".join(shape(item) for item in value)
    parts = ["None" if dim is None else str(dim) for dim in value]
    return f"({parts[0]},)" if len(parts) == 1 else f"({', '.join(parts)})"


@register.filter
def status_label(value) -> str:
    """Show a status value the way the badges do: 'changes_requested' -> 'changes requested'."""
    return str(value or "").replace("_", " ")


@register.filter
def thousands(value) -> str:
    """Group an integer's digits: 1234567 -> "1,234,567" (non-numbers unchanged)."""
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return str(value)
