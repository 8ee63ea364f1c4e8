"""Dashboard forms for heads and imports. They only parse input; heads.services does the work."""

import json

from django import forms

from backbones.models import BackboneVersion
from dashboard.kit import BackboneChoiceField
from heads.models import HeadVersion


def split_list(raw: str) -> list[str]:
    """Accept a JSON list (["a", "b"]) or a comma-separated list (a, b); return the strings."""
    raw = (raw or "").strip()
    if not raw:
        return []
    if raw.startswith("["):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f'Expected a JSON list such as ["cat", "dog"]; got {raw!r} ({exc}).')
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise forms.ValidationError(f'Expected a JSON list of strings such as ["cat", "dog"]; got {raw!r}.')
        return value
    return [item.strip() for item in raw.split(",") if item.strip()]


class HeadUploadForm(forms.Form):
    backbone = BackboneChoiceField(
        queryset=BackboneVersion.objects.none(),
        empty_label=None,
        help_text="Only ready backbone versions of your current team are listed.",
    )
    task = forms.CharField(
        max_length=63,
        help_text="Lowercase slug, e.g. 'sentiment'. A new version is added when the task already exists.",
        widget=forms.TextInput(attrs={"placeholder": "sentiment", "autocomplete": "off"}),
    )
    file = forms.FileField(
        label="Head or full model (.keras)",
        help_text="A head taking the backbone's features, or a full model containing this backbone "
        "(the head is cut out; backbone weights must be identical).",
        widget=forms.ClearableFileInput(attrs={"accept": ".keras"}),
    )
    labels = forms.CharField(
        required=False,
        help_text='Optional, one per output: "negative, neutral, positive" or a JSON list.',
        widget=forms.TextInput(attrs={"placeholder": "negative, neutral, positive", "autocomplete": "off"}),
    )
    description = forms.CharField(
        label="Model card",
        required=False,
        help_text="Markdown: intended use, training data, metrics, limitations.",
        widget=forms.Textarea(attrs={"rows": 8, "placeholder": "## Intended use\n…"}),
    )

    def __init__(self, *args, backbones, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["backbone"].queryset = backbones

    def clean_labels(self) -> list[str]:
        return split_list(self.cleaned_data.get("labels", ""))


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """A file field that accepts several files from one <input type=file multiple>."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": ".keras"}))
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        single_clean = super().clean
        if isinstance(data, list | tuple):
            return [single_clean(item, initial) for item in data]
        return [single_clean(data, initial)] if data else single_clean(data, initial)


class ImportForm(forms.Form):
    files = MultipleFileField(
        label="Full models (.keras)",
        help_text="Select all the files at once. Each must contain the same backbone; the task comes from "
        "the file name unless you list tasks below.",
    )
    backbone_name = forms.CharField(
        max_length=100,
        help_text="The shared backbone is stored once under this name (deduplicated against existing versions).",
        widget=forms.TextInput(attrs={"placeholder": "mobilenet-small", "autocomplete": "off"}),
    )
    feature_layer = forms.CharField(
        max_length=200,
        required=False,
        help_text="The last layer of the shared backbone; everything after it is the head. Leave it empty "
        "to use the deepest layer all the models share (needs two or more files).",
        widget=forms.TextInput(attrs={"placeholder": "features", "autocomplete": "off"}),
    )
    tasks = forms.CharField(
        required=False,
        help_text="Optional: one task slug per file, in file order, comma-separated or a JSON list.",
        widget=forms.TextInput(attrs={"placeholder": "sentiment, topic, spam", "autocomplete": "off"}),
    )
    branches = forms.BooleanField(
        required=False,
        label="Keep fine-tuned top layers as branches",
        help_text="For models that fine-tuned the top of the backbone: each keeps the layers above its branch "
        "point as a branch and shares everything below. Off: any backbone difference fails the import.",
    )
    min_shared_fraction = forms.FloatField(
        required=False,
        min_value=0.0,
        max_value=1.0,
        label="Least shared fraction",
        help_text="With branches: the least share of the backbone's parameters every model must share "
        "bit for bit (default 0.5).",
        widget=forms.NumberInput(attrs={"placeholder": "0.5", "step": "0.05"}),
    )

    def clean_tasks(self) -> list[str] | None:
        tasks = split_list(self.cleaned_data.get("tasks", ""))
        return tasks or None


# A team with more tasks than this filters heads by a typed task slug instead of a drop-down of every task.
MAX_TASK_CHOICES = 200


class HeadFilterForm(forms.Form):
    q = forms.CharField(
        required=False, label="Search", widget=forms.TextInput(attrs={"placeholder": "Search task or model card"})
    )
    status = forms.ChoiceField(choices=[("", "Any status"), *HeadVersion.Status.choices], required=False)
    backbone = forms.TypedChoiceField(coerce=int, required=False, empty_value=None)
    task = forms.ChoiceField(required=False)

    def __init__(self, *args, backbones, tasks, **kwargs):
        """`tasks`: at most MAX_TASK_CHOICES + 1 of the team's tasks; with more, the task filter is a text box."""
        super().__init__(*args, **kwargs)
        self.fields["backbone"].choices = [("", "Any backbone")] + [(b.pk, f"{b.name} v{b.version}") for b in backbones]
        tasks = list(tasks)
        if len(tasks) > MAX_TASK_CHOICES:
            self.fields["task"] = forms.SlugField(
                required=False,
                widget=forms.TextInput(attrs={"placeholder": "Task slug", "aria-label": "Task", "autocomplete": "off"}),
            )
        else:
            self.fields["task"].choices = [("", "Any task")] + [(t.slug, t.slug) for t in tasks]

    def filters(self) -> dict:
        """Return the selector filters for the valid fields (invalid ones are ignored)."""
        self.is_valid()
        return {key: value for key, value in self.cleaned_data.items() if value not in (None, "")}
