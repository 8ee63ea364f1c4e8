"""Dashboard forms for assemblies. They only parse input; assemblies.services and
assemblies.predicting do the work.

The "try it" form turns an uploaded .npy (never unpickled), an uploaded image (resized with
Pillow) or a seeded random example into a NumPy array shaped like one backbone input. No
TensorFlow here: the web process never imports it.
"""

import numpy as np
from django import forms
from PIL import Image, UnidentifiedImageError

from heads.forms import BackboneChoiceField
from modelhub.backbones.models import BackboneVersion

MAX_TRIAL_UPLOAD_BYTES = 16 * 1024 * 1024
IMAGE_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


class AssemblyBuildForm(forms.Form):
    backbone = BackboneChoiceField(
        queryset=BackboneVersion.objects.none(),
        empty_label=None,
        help_text="Only ready backbone versions of your current team are listed.",
    )
    heads = forms.TypedMultipleChoiceField(
        coerce=int,
        error_messages={"required": "Tick at least one approved head to assemble."},
    )
    name = forms.CharField(
        max_length=100,
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "e.g. reviews-prod", "autocomplete": "off"}),
        help_text="Optional; names the downloaded zip.",
    )

    def __init__(self, *args, backbones, heads, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["backbone"].queryset = backbones
        self.fields["heads"].choices = [(head.pk, f"{head.task.slug} v{head.version}") for head in heads]


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

    task_id = forms.TypedChoiceField(coerce=int, label="Task")
    source = forms.ChoiceField(label="Input", widget=forms.RadioSelect, initial=Source.RANDOM)
    file = forms.FileField(required=False, label="File")
    seed = forms.IntegerField(
        required=False, initial=0, min_value=0, max_value=2**32 - 1, label="Seed", widget=forms.NumberInput()
    )

    def __init__(self, *args, manifest: dict, **kwargs):
        super().__init__(*args, **kwargs)
        spec = manifest["backbone"]["input"]
        self.input_shape = list(spec["shape"])
        self.dtype = spec["dtype"]
        self.image_shape = image_input_shape(self.input_shape)
        self.fields["task_id"].choices = [(e["task_id"], f"{e['task_id']} · {e['task']}") for e in manifest["heads"]]
        sources = [
            (self.Source.RANDOM, "Random example (seeded normal noise)"),
            (self.Source.NPY, "Upload a .npy array"),
        ]
        if self.image_shape:
            height, width, channels = self.image_shape
            sources.append((self.Source.IMAGE, f"Upload an image (resized to {height}×{width}×{channels}, 0–1)"))
        self.fields["source"].choices = sources

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
        elif source == self.Source.RANDOM:
            cleaned["inputs"] = self._random_example(cleaned.get("seed") or 0)
        return cleaned

    def _load_npy(self, upload) -> np.ndarray:
        try:
            array = np.load(upload, allow_pickle=False)
        except ValueError as exc:
            if "allow_pickle" in str(exc):
                raise forms.ValidationError(
                    "This .npy holds Python objects (pickled data), which are never loaded. Save a numeric "
                    "array instead: np.save('x.npy', np.asarray(x, dtype='float32'))."
                ) from None
            raise forms.ValidationError(f"Could not read the file as a .npy array: {exc}.") from None
        except (OSError, EOFError) as exc:
            raise forms.ValidationError(
                f"Could not read the file as a .npy array ({exc}). Save it with np.save('x.npy', x)."
            ) from None
        if not isinstance(array, np.ndarray):
            raise forms.ValidationError("Expected a single array saved with np.save, not an .npz archive.")
        if array.dtype.kind not in "biuf":
            raise forms.ValidationError(f"Expected a numeric array, the file holds dtype '{array.dtype}'.")
        return array

    def _load_image(self, upload) -> np.ndarray:
        height, width, channels = self.image_shape
        try:
            with Image.open(upload) as image:
                image.draft(IMAGE_MODES[channels], (width, height))
                resized = image.convert(IMAGE_MODES[channels]).resize((width, height), Image.Resampling.BILINEAR)
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as exc:
            raise forms.ValidationError(f"Could not read the file as an image (PNG, JPEG, …): {exc}") from None
        array = np.asarray(resized, dtype=np.float32) / np.float32(255.0)
        return array.reshape(height, width, channels)

    def _random_example(self, seed: int) -> np.ndarray:
        shape = [1 if dim is None else int(dim) for dim in self.input_shape[1:]]
        return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
