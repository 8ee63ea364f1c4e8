"""Form fields that the dashboard forms of several apps share.

They live in the dashboard shell, below every app's forms, so one app's forms never import
another app's forms.
"""

from django import forms


class BackboneChoiceField(forms.ModelChoiceField):
    """Pick a backbone version, shown as "name vN · features [shape]"."""

    def label_from_instance(self, obj) -> str:
        feature = obj.spec.get("feature_shape") if obj.spec else None
        return f"{obj.name} v{obj.version}" + (f" · features {feature}" if feature else "")
