"""Worker side: turn a dataset's input arrays into the inputs a backbone takes.

A dataset's ``x`` is one array (the unnamed input) or ``{name: array}``; strings are object
arrays of ``str``, token ids int32 ``(n, L)`` zero-padded at the end (the data contract of
training.work.datasets.dataset_arrays). The pairing and the checks are training.input_fit's, the
rule job_create applies to the stored description; here the arrays are made to fit: ``(n,)``
becomes ``(n, 1)`` for a backbone input of shape ``[1]``, token ids are zero-padded to a fixed
length (all-zero columns past it are dropped; real ids past it are refused), and every input is
cast to its backbone input's dtype.
"""

from collections.abc import Mapping

import numpy as np

from training.input_fit import describe_inputs, input_pair_problem, pair_inputs
from training.work.dataset_zips import DatasetError, describe_input


def backbone_inputs(x, backbone_inputs_spec: list[dict]):
    """Return ``x`` as the backbone takes it: one array for a one-input backbone, else ``{input name: array}``.

    Raises DatasetError naming both sides when an input is missing, of the wrong kind or shape.

    Example:
        >>> text = [{"name": "text", "shape": [1], "dtype": "string"}]
        >>> backbone_inputs(np.array(["good", "bad"], dtype=object), text)
        array([['good'], ['bad']], dtype=object)
    """
    arrays = dict(x) if isinstance(x, Mapping) else {"x": x}
    by_name = {spec["name"]: spec for spec in backbone_inputs_spec}
    described = [describe_input(name, _drop_zero_tail(array, by_name.get(name))) for name, array in arrays.items()]
    pairs, problem = pair_inputs(described, backbone_inputs_spec)
    for data, model in pairs:
        problem = problem or input_pair_problem(data, model)
    if problem:
        raise DatasetError(
            f"The dataset has inputs {describe_inputs(described)}; the backbone takes "
            f"{describe_inputs(backbone_inputs_spec)}. {problem}"
        )
    fitted = {model["name"]: _fit(arrays[data["name"]], model) for data, model in pairs}
    if len(backbone_inputs_spec) == 1:
        return fitted[backbone_inputs_spec[0]["name"]]
    return fitted


def _drop_zero_tail(array: np.ndarray, model: dict | None) -> np.ndarray:
    """Drop token-id columns past a fixed backbone length when they are all padding (0)."""
    if model is None or array.ndim != 2 or array.dtype.kind not in "iu":
        return array
    shape = list(model.get("shape") or [])
    if len(shape) == 1 and shape[0] is not None and array.shape[1] > shape[0] and not np.any(array[:, shape[0] :]):
        return array[:, : shape[0]]
    return array


def _fit(array: np.ndarray, model: dict) -> np.ndarray:
    shape = list(model.get("shape") or [])
    array = _drop_zero_tail(array, model)
    if array.ndim == 1 and len(shape) == 1 and shape[0] in (1, None):
        array = array.reshape(-1, 1)
    if model["dtype"] == "string":
        return np.asarray(array, dtype=object)
    if array.ndim == 2 and len(shape) == 1 and shape[0] is not None and array.shape[1] < shape[0]:
        array = np.pad(array, ((0, 0), (0, shape[0] - array.shape[1])))  # token ids: 0 is padding
    return array.astype(model["dtype"], copy=False)


def num_examples(x) -> int:
    """Return the number of rows of ``x`` (one array or ``{name: array}``, all of one row count)."""
    return len(next(iter(x.values()))) if isinstance(x, Mapping) else len(x)


def first_rows(x, count: int):
    """Return the first ``count`` rows of every input of ``x``."""
    return {name: array[:count] for name, array in x.items()} if isinstance(x, Mapping) else x[:count]
