"""Dashboard forms for assemblies. They only parse input; assemblies.services and
assemblies.inputs do the work.

The "try it" form turns an uploaded .npy (never unpickled), an uploaded image (resized with
Pillow), a typed sentence or a seeded random example into one example of the backbone inputs:
an array for a single input, a dict of arrays by input name for several.
assemblies.inputs checks it against the manifest. No TensorFlow here: the web process never
imports it.
"""

import numpy as np
from django import forms
from PIL import Image, UnidentifiedImageError

from assemblies.inputs import (
    SINGLE_INPUT_NAME,
    dtype_kind,
    example_dims,
    manifest_inputs,
    numpy_dtype,
)
from backbones.models import BackboneVersion
from dashboard.kit import BackboneChoiceField

MAX_TRIAL_UPLOAD_BYTES = 16 * 1024 * 1024
MAX_TRIAL_TEXT_CHARS = 2000
IMAGE_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
# Random text examples: a few words from this list (the manifest carries no vocabulary).
RANDOM_WORDS = (
    "a", "the", "movie", "film", "story", "plot", "actor", "music", "ending", "was", "is", "really",
    "not", "very", "good", "great", "bad", "boring", "fun", "slow", "loved", "hated", "best", "worst",
)  # fmt: skip
MIN_RANDOM_WORDS, MAX_RANDOM_WORDS = 2, 6
RANDOM_INTEGERS = (0, 2)  # [low, high): valid for any vocabulary or category count
RANDOM_KIND_LABELS = {
    "float": "normal noise",
    "int": f"integers {RANDOM_INTEGERS[0]}–{RANDOM_INTEGERS[1] - 1}",
    "bool": "true/false",
    "string": "a few random words",
}


# Measured by bench/assembly.py (MobileNetV2-96, 262 variables): what each per-task signature costs.
TASK_SIGNATURE_KB = 62
TASK_SIGNATURE_SECONDS = 0.4


class AssemblyBuildForm(forms.Form):
    backbone = BackboneChoiceField(
        queryset=BackboneVersion.objects.none(),
        empty_label=None,
        help_text="Only ready backbone versions of your current team are listed.",
    )
    heads = forms.TypedMultipleChoiceField(
        coerce=int,
        required=False,
        error_messages={"required": "Tick at least one approved head to assemble."},
    )
    all_latest = forms.BooleanField(
        required=False,
        label="The latest approved version of every task",
        help_text="Offered when a backbone has too many approved heads to tick one by one.",
    )
    name = forms.CharField(
        max_length=100,
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "e.g. reviews-prod", "autocomplete": "off"}),
        help_text="Optional; names the downloaded zip.",
    )
    task_signatures = forms.BooleanField(
        required=False,
        label="Also add one signature per task",
        help_text=(
            "Off by default: serving_default(inputs, task_id) and serving_by_task(inputs, task) already serve "
            f"every task. Each per-task signature adds about {TASK_SIGNATURE_KB} KB to the SavedModel and "
            f"{TASK_SIGNATURE_SECONDS} s to the build (measured on MobileNetV2; more for backbones with more "
            "variables): 200 tasks add about 12 MB and 80 s."
        ),
    )

    def __init__(self, *args, backbones, heads, **kwargs):
        """`heads`: the approved heads that may be ticked (a QuerySet is read only to validate a POST)."""
        super().__init__(*args, **kwargs)
        self.fields["backbone"].queryset = backbones
        # Read the choices once: rendering a <select> reads them twice (the "required" check, then the options).
        self.fields["backbone"].widget.choices = list(iter(self.fields["backbone"].choices))
        # A callable: the choices are read when a POST is validated, never to render the page.
        self.fields["heads"].choices = lambda: [(pk, f"{slug} v{version}") for pk, slug, version in _choice_rows(heads)]

    def clean(self):
        cleaned = super().clean()
        if not cleaned.get("heads") and not cleaned.get("all_latest") and "heads" not in self.errors:
            self.add_error("heads", self.fields["heads"].error_messages["required"])
        return cleaned


def _choice_rows(heads) -> list[tuple[int, str, int]]:
    """Return (pk, task slug, version) of `heads`, a list of head versions or a QuerySet."""
    if hasattr(heads, "values_list"):
        return list(heads.values_list("pk", "task__slug", "version"))
    return [(head.pk, head.task.slug, head.version) for head in heads]


def image_input_shape(input_shape: list) -> tuple[int, int, int] | None:
    """Return (height, width, channels) when one input example is an image Pillow can make, else None."""
    example = input_shape[1:]
    if len(example) != 3 or any(dim is None for dim in example) or example[2] not in IMAGE_MODES:
        return None
    return int(example[0]), int(example[1]), int(example[2])


class TryItForm(forms.Form):
    class Source:
        RANDOM = "random"
        NPY = "npy"
        IMAGE = "image"
        TEXT = "text"

    task_id = forms.TypedChoiceField(coerce=int, label="Task")
    source = forms.ChoiceField(label="Input", widget=forms.RadioSelect, initial=Source.RANDOM)
    file = forms.FileField(required=False, label="File")
    text = forms.CharField(
        required=False,
        max_length=MAX_TRIAL_TEXT_CHARS,
        label="Sentence",
        widget=forms.TextInput(attrs={"placeholder": "e.g. a great movie", "autocomplete": "off"}),
    )
    seed = forms.IntegerField(
        required=False, initial=0, min_value=0, max_value=2**32 - 1, label="Seed", widget=forms.NumberInput()
    )

    def __init__(self, *args, manifest: dict, **kwargs):
        super().__init__(*args, **kwargs)
        self.input_specs = manifest_inputs(manifest)
        single = self.input_specs[0] if len(self.input_specs) == 1 else None
        kind = dtype_kind(single["dtype"]) if single else None
        # .npy and image uploads fill one numeric input; a typed sentence fills one string input.
        self.numeric_input = single if kind in ("float", "int") else None
        self.text_input = single if kind == "string" else None
        self.image_shape = image_input_shape(single["shape"]) if self.numeric_input else None
        self.fields["task_id"].choices = [(e["task_id"], f"{e['task_id']} · {e['task']}") for e in manifest["heads"]]
        sources = [(self.Source.RANDOM, self._random_label())]
        if self.numeric_input:
            sources.append((self.Source.NPY, "Upload a .npy array"))
        self.image_scale = "scaled to 0–1" if kind == "float" else "as 0–255 integers"
        if self.image_shape:
            height, width, channels = self.image_shape
            scale = "0–1" if kind == "float" else "0–255"
            sources.append((self.Source.IMAGE, f"Upload an image (resized to {height}×{width}×{channels}, {scale})"))
        if self.text_input:
            sources.append((self.Source.TEXT, "Type a sentence"))
        self.fields["source"].choices = sources
        self.offers_upload = self.numeric_input is not None

    def _random_label(self) -> str:
        kinds = [(spec["name"], dtype_kind(spec["dtype"])) for spec in self.input_specs]
        if len(kinds) == 1:
            return f"Random example (seeded {RANDOM_KIND_LABELS[kinds[0][1]]})"
        return f"Random example (seeded: {', '.join(f'{name} {RANDOM_KIND_LABELS[kind]}' for name, kind in kinds)})"

    def clean(self):
        cleaned = super().clean()
        source = cleaned.get("source")
        upload = cleaned.get("file")
        if source in (self.Source.NPY, self.Source.IMAGE):
            if upload is None:
                raise forms.ValidationError("Choose a file to upload, or pick the random example.")
            if upload.size > MAX_TRIAL_UPLOAD_BYTES:
                raise forms.ValidationError(
                    f"The file is {upload.size} bytes; trial inputs are limited to {MAX_TRIAL_UPLOAD_BYTES} bytes. "
                    "Send fewer rows, or download the model and run it locally."
                )
        if source == self.Source.NPY:
            cleaned["inputs"] = self._load_npy(upload)
        elif source == self.Source.IMAGE:
            cleaned["inputs"] = self._load_image(upload)
        elif source == self.Source.TEXT:
            cleaned["inputs"] = self._typed_text(cleaned.get("text") or "")
        elif source == self.Source.RANDOM:
            cleaned["inputs"] = self._random_example(cleaned.get("seed") or 0)
        return cleaned

    def _load_npy(self, upload) -> np.ndarray:
        from modelhub.ml.errors import InvalidDatasetError
        from modelhub.ml.untrusted.npy import read_npy

        upload.seek(0)
        try:  # the header is checked against the bytes present before anything is allocated
            return read_npy(upload, num_bytes=upload.size, max_bytes=MAX_TRIAL_UPLOAD_BYTES, what=f"'{upload.name}'")
        except InvalidDatasetError as exc:
            raise forms.ValidationError(str(exc)) from None

    def _load_image(self, upload) -> np.ndarray:
        height, width, channels = self.image_shape
        try:
            with Image.open(upload) as image:
                image.draft(IMAGE_MODES[channels], (width, height))
                resized = image.convert(IMAGE_MODES[channels]).resize((width, height), Image.Resampling.BILINEAR)
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as exc:
            raise forms.ValidationError(f"Could not read the file as an image (PNG, JPEG, …): {exc}") from None
        array = np.asarray(resized).reshape(height, width, channels)
        if dtype_kind(self.numeric_input["dtype"]) == "int":
            return array.astype(numpy_dtype(self.numeric_input["dtype"]))
        return array.astype(np.float32) / np.float32(255.0)

    def _typed_text(self, text: str) -> np.ndarray:
        if not text.strip():
            raise forms.ValidationError("Type a sentence, or pick the random example.")
        return np.full(example_dims(self.text_input), text, dtype=object)

    def _random_example(self, seed: int) -> np.ndarray | dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        examples = {spec["name"]: random_example(spec, rng) for spec in self.input_specs}
        return examples[SINGLE_INPUT_NAME] if len(examples) == 1 else examples


def random_example(spec: dict, rng: np.random.Generator) -> np.ndarray:
    """Return one seeded example of an input: normal floats, small integers, booleans or a few words."""
    shape = example_dims(spec)
    kind = dtype_kind(spec["dtype"])
    if kind == "string":
        sentences = [
            " ".join(rng.choice(RANDOM_WORDS, size=int(rng.integers(MIN_RANDOM_WORDS, MAX_RANDOM_WORDS + 1))))
            for _ in range(int(np.prod(shape)))
        ]
        return np.array(sentences, dtype=object).reshape(shape)
    if kind == "int":
        return rng.integers(*RANDOM_INTEGERS, size=shape).astype(numpy_dtype(spec["dtype"]))
    if kind == "bool":
        return rng.integers(0, 2, size=shape).astype(bool)
    return rng.standard_normal(shape).astype(numpy_dtype(spec["dtype"]))
