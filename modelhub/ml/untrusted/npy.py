"""Untrusted ``.npy`` bytes: the header is read and checked against the bytes that follow before
NumPy allocates anything.

``np.load`` on a file-like object allocates the array its header declares before reading the
data, so 100 bytes declaring ``(10**12,)`` float64 raise ``MemoryError`` (a 500 in the web
process). Here the declared size must equal the bytes actually present and fit a ceiling, the
dtype must be plain numbers (never objects, so never pickles), and only then is it read.
"""

from __future__ import annotations

import io
from typing import BinaryIO

import numpy as np

from modelhub.ml.errors import InvalidDatasetError

SAVE_NPY_HINT = "Save it with np.save('x.npy', np.asarray(x, dtype='float32'))."


def read_npy(stream: BinaryIO, *, num_bytes: int, max_bytes: int, what: str = "the .npy file") -> np.ndarray:
    """Read one ``.npy`` array from ``stream`` (``num_bytes`` long) after checking its header.

    Args:
        stream: positioned at the file's start.
        num_bytes: the file's size.
        max_bytes: the largest array (data bytes) accepted.
        what: the file as the user knows it.

    Returns:
        The array.

    Raises:
        InvalidDatasetError: not a .npy, objects (pickles), or a header that does not match the data.

    Example:
        >>> read_npy(open("x.npy", "rb"), num_bytes=os.path.getsize("x.npy"), max_bytes=2**24).shape
        (1, 8)
    """
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream, max_header_size=10_000)
        elif version in ((2, 0), (3, 0)):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream, max_header_size=10_000)
        else:
            raise ValueError(f"format version {version} is not supported")
        header_bytes = stream.tell()
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise InvalidDatasetError(
            f"Expected a .npy array in {what}, could not read its header ({exc}). {SAVE_NPY_HINT}"
        )
    if dtype.hasobject:
        raise InvalidDatasetError(
            f"Expected numbers in {what}, it holds Python objects (pickled data), which are never loaded. "
            + SAVE_NPY_HINT
        )
    if dtype.kind not in "biuf" or dtype.itemsize == 0:
        raise InvalidDatasetError(f"Expected a numeric array in {what}, it holds dtype '{dtype}'. {SAVE_NPY_HINT}")
    if any(size < 0 for size in shape):
        raise InvalidDatasetError(f"Expected non-negative dimensions in {what}, its header declares {shape}.")
    declared = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    present = num_bytes - header_bytes
    if declared > max_bytes:
        raise InvalidDatasetError(
            f"Expected at most {max_bytes:,} bytes of data in {what}, its header declares {declared:,} "
            f"(shape {list(shape)}, {dtype}). Send fewer rows."
        )
    if declared != present:
        raise InvalidDatasetError(
            f"Expected {what} to hold the {declared:,} bytes its header declares (shape {list(shape)}, {dtype}), "
            f"it holds {present:,}: the file is truncated or altered. {SAVE_NPY_HINT}"
        )
    data = stream.read(declared)
    array = np.frombuffer(data, dtype=dtype)
    if fortran_order:
        return array.reshape(shape[::-1]).transpose().copy()
    return array.reshape(shape).copy()


def read_npy_bytes(data: bytes, *, max_bytes: int, what: str = "the .npy file") -> np.ndarray:
    """:func:`read_npy` over bytes in memory."""
    return read_npy(io.BytesIO(data), num_bytes=len(data), max_bytes=max_bytes, what=what)
