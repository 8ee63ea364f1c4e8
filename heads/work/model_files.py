"""Worker side: turn Keras heads into stored blobs and describe them (imports TensorFlow).

Heads made of Dense layers also get their weights packed once (when the head is validated,
imported or trained): reading a few kilobytes per head instead of deserialising every
`.keras` file lets an assembly of 10,000 heads build near the speed of reading their bytes.
"""

import math
import tempfile
from pathlib import Path

from django.core.exceptions import ObjectDoesNotExist
from django.db import IntegrityError, transaction

from artifacts.models import Blob
from artifacts.services import blob_open, blob_store_bytes, blob_store_path
from heads.models import HeadWeights


def head_output_width(head) -> int:
    """Return the number of values the head outputs per row (its flattened output size)."""
    from modelhub.ml.errors import FeatureShapeMismatchError

    if len(head.outputs) != 1:
        raise FeatureShapeMismatchError(
            f"Expected a head with one output tensor, '{head.name}' has {len(head.outputs)}. "
            "Upload each output as its own head (one task each)."
        )
    dims = head.outputs[0].shape[1:]
    if any(d is None for d in dims):
        raise FeatureShapeMismatchError(f"Expected a head with a fixed output shape, got {list(dims)}.")
    return int(math.prod(int(d) for d in dims))


def save_model_as_blob(model, name: str = "model") -> Blob:
    """Save a Keras model to .keras and store it content-addressed; return the blob."""
    with tempfile.TemporaryDirectory(prefix="modelhub-save-") as tmp:
        path = Path(tmp) / f"{name}.keras"
        model.save(path)
        return blob_store_path(path=path).blob


def save_head_as_blob(head, name: str = "head") -> Blob:
    """Save a head like :func:`save_model_as_blob`, and pack its Dense weights for assemblies."""
    blob = save_model_as_blob(head, name=name)
    head_weights_record(blob=blob, model=head)
    return blob


def head_weights_record(*, blob: Blob, model) -> HeadWeights:
    """Record the packed Dense-chain weights of the head stored in `blob` (idempotent).

    `model` is that head, already loaded. A head that is not a Dense chain gets a row
    without `packed`, so that nobody tries again.
    """
    from modelhub.ml.head_weights import dense_chain_of, pack

    existing = HeadWeights.objects.filter(source=blob).first()
    if existing is not None:
        return existing
    chain = dense_chain_of(model)
    fields: dict = {}
    if chain is not None:
        fields = {
            "packed": blob_store_bytes(data=pack(chain)).blob,
            "steps": [list(step) for step in chain.steps],
            "input_width": chain.input_width,
        }
    try:
        with transaction.atomic():
            return HeadWeights.objects.create(source=blob, **fields)
    except IntegrityError:  # recorded concurrently by another worker
        return HeadWeights.objects.get(source=blob)


def head_weights_of(blob: Blob) -> HeadWeights | None:
    """Return the recorded weights of a head blob (prefetched with select_related when possible)."""
    try:
        return blob.head_weights
    except ObjectDoesNotExist:
        return None


def packed_head(weights: HeadWeights):
    """Return a PackedDenseHead whose weights are read from the store when the assembly needs them."""
    from modelhub.ml.head_weights import PackedDenseHead, unpack

    packed = weights.packed

    def load():
        with blob_open(blob=packed) as handle:
            return unpack(handle.read(), what=f"the packed weights of head blob {weights.source_id}")

    return PackedDenseHead(
        steps=tuple(tuple(step) for step in weights.steps), input_width=int(weights.input_width), load=load
    )
