"""Dashboard forms for backbones. They only parse input; backbones.services does the work."""

from django import forms

from backbones.models import BackboneVersion


class BackboneUploadForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        help_text="Letters, digits, '.', '_' or '-'. Uploading the same name again creates the next version.",
        widget=forms.TextInput(attrs={"placeholder": "mobilenet-small", "autocomplete": "off"}),
    )
    file = forms.FileField(
        label="Model file (.keras)",
        help_text="Saved with model.save('name.keras'). It is inspected by a worker; uploaded code never runs.",
        widget=forms.ClearableFileInput(attrs={"accept": ".keras"}),
    )
    feature_layer = forms.CharField(
        max_length=200,
        required=False,
        help_text="The layer whose output feeds the heads. Leave empty to use the model's output.",
        widget=forms.TextInput(attrs={"placeholder": "features", "autocomplete": "off"}),
    )
    description = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "placeholder": "What this backbone was trained on (markdown)."}),
    )


class BackboneFilterForm(forms.Form):
    status = forms.ChoiceField(choices=[("", "Any status"), *BackboneVersion.Status.choices], required=False)
