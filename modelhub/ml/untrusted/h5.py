"""Stage 3: ``model.weights.h5`` walked by its links and checked before any dataset is read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from modelhub.ml.errors import InvalidModelFileError, UnsafeModelError
from modelhub.ml.untrusted.limits import Limits

# HDF5 filters that ship with the library or h5py: gzip (deflate), shuffle, fletcher32, lzf.
ALLOWED_FILTERS = {1: "gzip", 2: "shuffle", 3: "fletcher32", 32000: "lzf"}
# gzip's best case is about 1:1032; nothing legitimate compresses weights further.
MAX_COMPRESSION_RATIO = 1100
# Datasets at or under this many bytes may be stored compactly (inside their header).
SMALL_DATASET_BYTES = 64 * 1024


@dataclass(frozen=True)
class DatasetInfo:
    """One checked dataset of ``model.weights.h5``: where it is and what it declares."""

    path: str
    shape: tuple[int, ...]
    dtype: np.dtype
    declared_bytes: int


def check_h5(h5: Any, *, what: str, file_bytes: int, limits: Limits) -> dict[str, DatasetInfo]:
    """Walk an open ``h5py.File`` by its links and refuse anything a reader could be tricked by.

    No dataset's data are read: only link tables, object headers and property lists.

    Args:
        h5: the open file.
        what: the file as the user knows it (for messages).
        file_bytes: the weights file's size, which its datasets' storage must fit in.
        limits: ``max_datasets``, ``max_declared_bytes``, ``max_h5_depth``.

    Returns:
        ``{dataset path: DatasetInfo}`` for every dataset.

    Raises:
        UnsafeModelError: links, external storage, virtual datasets, references, unknown filters.
        InvalidModelFileError: dtypes, counts and sizes beyond the limits or out of proportion.
    """
    import h5py

    datasets: dict[str, DatasetInfo] = {}
    visited: set[Any] = set()
    total_declared = 0
    total_stored = 0
    stack: list[tuple[Any, str, int]] = [(h5, "", 0)]
    while stack:
        group, prefix, depth = stack.pop()
        if depth > limits.max_h5_depth:
            raise InvalidModelFileError(
                f"Expected groups nested at most {limits.max_h5_depth} deep in {what}, '{prefix}' is deeper."
            )
        for raw_name in group.id.__iter__():
            name = raw_name.decode("utf-8", "replace") if isinstance(raw_name, bytes) else str(raw_name)
            path = f"{prefix}/{name}" if prefix else name
            link_type = group.id.links.get_info(raw_name if isinstance(raw_name, bytes) else name.encode()).type
            if link_type != h5py.h5l.TYPE_HARD:
                kind = {h5py.h5l.TYPE_SOFT: "a soft link", h5py.h5l.TYPE_EXTERNAL: "an external link"}.get(
                    link_type, f"a user-defined link (type {link_type})"
                )
                raise UnsafeModelError(
                    f"Expected only plain groups and datasets in {what}, found {kind} at '{path}'. Links "
                    "can point at other files on the server, so they are refused. Save the model with Keras."
                )
            obj = group[raw_name if isinstance(raw_name, bytes) else name]
            token = _object_token(obj)
            if token in visited:
                raise UnsafeModelError(
                    f"Expected each object of {what} reached once, '{path}' links back to an object seen "
                    "before (a hard-link loop or alias). Keras never writes those."
                )
            visited.add(token)
            if isinstance(obj, h5py.Group):
                stack.append((obj, path, depth + 1))
                continue
            if not isinstance(obj, h5py.Dataset):
                raise UnsafeModelError(
                    f"Expected only groups and datasets in {what}, found a {type(obj).__name__} at '{path}'."
                )
            info, stored = _check_dataset(obj, path, what)
            datasets[path] = info
            if len(datasets) > limits.max_datasets:
                raise InvalidModelFileError(
                    f"Expected at most {limits.max_datasets:,} weight arrays in {what}, found more."
                )
            total_declared += info.declared_bytes
            total_stored += stored
            if total_declared > limits.max_declared_bytes:
                raise InvalidModelFileError(
                    f"Expected the weights of {what} to declare at most {limits.max_declared_bytes:,} bytes "
                    f"together, they declare more than {total_declared:,} (reached at '{path}')."
                )
    if total_stored > file_bytes:
        raise InvalidModelFileError(
            f"Expected the weights of {what} to fit in its {file_bytes:,} bytes, they claim {total_stored:,} "
            "bytes of storage. The file is truncated or forged."
        )
    return datasets


def _object_token(obj: Any) -> Any:
    import h5py

    info = h5py.h5o.get_info(obj.id)
    return getattr(info, "token", None) or getattr(info, "addr", None) or id(obj)


def _check_dataset(dataset: Any, path: str, what: str) -> tuple[DatasetInfo, int]:
    import h5py

    plist = dataset.id.get_create_plist()
    if plist.get_external_count() > 0:
        raise UnsafeModelError(
            f"Expected the weights of {what} stored inside the file, '{path}' uses HDF5 external storage "
            f"('{plist.get_external(0)[0].decode('utf-8', 'replace')}'). External storage reads other files "
            "on the server, so it is refused. Save the model with Keras."
        )
    if plist.get_layout() == h5py.h5d.VIRTUAL or dataset.is_virtual:
        raise UnsafeModelError(
            f"Expected plain datasets in {what}, '{path}' is a virtual dataset (it maps other files' data). "
            "Virtual datasets are refused. Save the model with Keras."
        )
    for index in range(plist.get_nfilters()):
        code, _flags, _values, filter_name = plist.get_filter(index)
        if code not in ALLOWED_FILTERS:
            label = filter_name.decode("utf-8", "replace") if isinstance(filter_name, bytes) else filter_name
            raise UnsafeModelError(
                f"Expected only the built-in HDF5 filters ({', '.join(ALLOWED_FILTERS.values())}) in {what}, "
                f"'{path}' uses filter {code} ('{label}'), which would load a plugin. Save the model with Keras."
            )
    dtype = dataset.dtype
    _check_dtype(dtype, path, what)
    shape = tuple(int(size) for size in (dataset.shape or ()))
    if dataset.shape is None:  # a null dataspace holds nothing
        shape = (0,)
    count = int(np.prod(shape, dtype=np.float64)) if shape else 1
    declared = count * dtype.itemsize
    stored = int(dataset.id.get_storage_size())
    if plist.get_nfilters():
        ratio_ok = declared <= max(stored, 1) * MAX_COMPRESSION_RATIO
    else:
        ratio_ok = declared <= SMALL_DATASET_BYTES or stored >= declared
    if not ratio_ok:
        raise InvalidModelFileError(
            f"Expected '{path}' in {what} to store what it declares: it declares {declared:,} bytes "
            f"({'x'.join(map(str, shape)) or 'scalar'} {dtype}) but stores {stored:,}. Such a file makes a "
            "reader allocate memory the file never paid for, so it is refused."
        )
    return DatasetInfo(path=path, shape=shape, dtype=dtype, declared_bytes=declared), stored


def _check_dtype(dtype: np.dtype, path: str, what: str) -> None:
    import h5py

    if h5py.check_ref_dtype(dtype) is not None:
        raise UnsafeModelError(
            f"Expected numbers or strings in {what}, '{path}' holds HDF5 object or region references. "
            "References can point anywhere in the file, so they are refused."
        )
    if h5py.check_string_dtype(dtype) is not None or dtype.kind in "biufS":
        return
    raise InvalidModelFileError(
        f"Expected numeric or string weights in {what}, '{path}' has dtype {dtype!r} "
        f"({'compound' if dtype.names else 'kind ' + dtype.kind}). Save the model with Keras."
    )
