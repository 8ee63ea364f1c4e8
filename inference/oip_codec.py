"""Open Inference Protocol v2 tensors on the wire, with NumPy only: read a request, write a response.

A request body is JSON, or (Triton's binary tensor extension) JSON of
``Inference-Header-Content-Length`` bytes followed by the raw tensors that name a
``binary_data_size``. Outputs go back as JSON ``data``, or as raw bytes after the JSON when the
request asks for binary outputs (``parameters.binary_data_output`` or an output's
``parameters.binary_data``). BYTES tensors in binary form are 4-byte little-endian lengths, each
followed by its bytes. Nothing here knows Django or TensorFlow.
"""

import json
import math
import struct
from dataclasses import dataclass

import numpy as np

# Manifest dtypes (TensorFlow names) and the protocol's datatypes.
DATATYPES = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "string": "BYTES",
}
NUMPY_TYPES = {datatype: np.dtype(name) for name, datatype in DATATYPES.items() if name != "string"}
HEADER_LENGTH = "Inference-Header-Content-Length"
MAX_ELEMENTS = 16 * 1024 * 1024
# The most dimensions a tensor may declare (NumPy stops at 64; a model input has a handful).
MAX_DIMS = 8


class TensorError(ValueError):
    """A request the protocol cannot read: the message says what was expected and what came."""


@dataclass
class InferRequest:
    """A decoded inference request: its id, its tensors by name and how outputs should go back."""

    id: str | None
    tensors: dict[str, np.ndarray]
    datatypes: dict[str, str]
    outputs: list[str] | None
    binary_outputs: set[str]


def datatype_of(dtype: str) -> str:
    """Return the protocol datatype of a manifest dtype ("float32" -> "FP32"; bfloat16 travels as FP32)."""
    return DATATYPES.get(dtype, "FP32")


def parse_request(body: bytes, header_length: str | None) -> InferRequest:
    """Decode an inference request body (plain JSON or the binary tensor extension).

    Raises:
        TensorError: the JSON, a tensor's shape, datatype, data or binary size is wrong.
    """
    length = None
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            raise TensorError(f"{HEADER_LENGTH} must be a number of bytes; received {header_length[:40]!r}.") from None
        if not 0 <= length <= len(body):
            raise TensorError(f"{HEADER_LENGTH} is {length}, but the body holds {len(body)} bytes.")
    head, rest = (body, b"") if length is None else (body[:length], body[length:])
    try:
        document = json.loads(head or b"null")
    except (ValueError, RecursionError) as exc:
        raise TensorError(f"The request is not JSON ({exc}). Send an inference request object.") from None
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list) or not document["inputs"]:
        raise TensorError(
            'Expected an inference request object {"inputs": [{"name", "shape", "datatype", "data"}, ...]}; '
            "'inputs' is missing or empty."
        )
    parameters = _parameters(document.get("parameters"), "the request")
    tensors, datatypes, offset = {}, {}, 0
    for index, tensor in enumerate(document["inputs"]):
        name, array, used = _read_input(tensor, index, rest, offset)
        if name in tensors:
            raise TensorError(f"Input '{name}' is given twice; give each input once.")
        tensors[name], datatypes[name] = array, tensor["datatype"]
        offset += used
    if offset != len(rest):
        raise TensorError(f"The body has {len(rest) - offset} bytes after the tensors that no input claims.")
    outputs, binary = _requested_outputs(document.get("outputs"), bool(parameters.get("binary_data_output")))
    request_id = document.get("id")
    return InferRequest(
        id=None if request_id is None else str(request_id),
        tensors=tensors,
        datatypes=datatypes,
        outputs=outputs,
        binary_outputs=binary,
    )


def _parameters(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TensorError(f"'parameters' of {where} must be an object; received {type(value).__name__}.")
    return value


def _read_input(tensor, index: int, rest: bytes, offset: int) -> tuple[str, np.ndarray, int]:
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise TensorError(f'inputs[{index}] must be an object with a "name", "shape", "datatype" and "data".')
    name = tensor["name"]
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str) or (datatype not in NUMPY_TYPES and datatype != "BYTES"):
        raise TensorError(f"Input '{name}' has datatype {datatype!r}; expected one of {sorted(NUMPY_TYPES)} or BYTES.")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        shown = repr(shape)[:80]
        raise TensorError(f"Input '{name}' needs a 'shape': a list of sizes >= 0, e.g. [2, 8]; received {shown}.")
    if len(shape) > MAX_DIMS or any(d > MAX_ELEMENTS for d in shape):
        shown = repr(shape)[:80]
        raise TensorError(
            f"Input '{name}' has shape {shown}: at most {MAX_DIMS} dimensions of at most {MAX_ELEMENTS:,} each are "
            "read. Send [rows, ...] as the model's metadata (GET /v2/models/{name}) lists it."
        )
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise TensorError(f"Input '{name}' declares {count:,} elements; at most {MAX_ELEMENTS:,} are read.")
    size = _parameters(tensor.get("parameters"), f"input '{name}'").get("binary_data_size")
    if size is not None:
        if "data" in tensor:
            raise TensorError(f"Input '{name}' has both 'data' and a binary_data_size; give one.")
        if not isinstance(size, int) or size < 0 or offset + size > len(rest):
            raise TensorError(f"Input '{name}' declares binary_data_size {size!r}, beyond the bytes sent.")
        raw = rest[offset : offset + size]
        return name, _from_binary(name, datatype, shape, raw), size
    if "data" not in tensor:
        raise TensorError(f"Input '{name}' has no 'data' (and no binary_data_size).")
    return name, _from_json(name, datatype, shape, tensor["data"]), 0


def _flatten(data, name: str) -> list:
    flat, stack = [], [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            flat.append(item)
        if len(flat) > MAX_ELEMENTS:
            raise TensorError(f"Input '{name}' holds more than {MAX_ELEMENTS:,} elements.")
    return flat


def _from_json(name: str, datatype: str, shape: list[int], data) -> np.ndarray:
    flat = _flatten(data, name)
    if len(flat) != math.prod(shape):
        raise TensorError(
            f"Input '{name}' has shape {shape} ({math.prod(shape)} elements) but its data holds {len(flat)}. "
            "Send the data row-major, flattened or nested, with as many elements as the shape says."
        )
    if datatype == "BYTES":
        if not all(isinstance(item, str) for item in flat):
            raise TensorError(f"Input '{name}' is BYTES: send strings, e.g. [\"great movie\"].")
        return _reshaped(np.array(flat, dtype=object), shape, name)
    kind = NUMPY_TYPES[datatype].kind
    for item in flat:
        ok = isinstance(item, bool) if kind == "b" else isinstance(item, int | float) and not isinstance(item, bool)
        if not ok or (kind in "iu" and isinstance(item, float) and not item.is_integer()):
            wanted = {"b": "true/false", "f": "numbers"}.get(kind, "whole numbers")
            raise TensorError(f"Input '{name}' is {datatype}: send {wanted}; found {json.dumps(item)[:40]}.")
    try:
        array = np.asarray(flat, dtype=NUMPY_TYPES[datatype])
    except (OverflowError, ValueError):
        raise TensorError(f"Input '{name}' holds a value outside the {datatype} range.") from None
    return _reshaped(array, shape, name)


def _reshaped(array: np.ndarray, shape: list[int], name: str) -> np.ndarray:
    """Return `array` in `shape`, or raise TensorError (never NumPy's ValueError) saying why not."""
    try:
        return array.reshape(shape)
    except ValueError as exc:
        raise TensorError(f"Input '{name}' cannot take the shape {shape}: {exc}.") from None


def _from_binary(name: str, datatype: str, shape: list[int], raw: bytes) -> np.ndarray:
    count = math.prod(shape)
    if datatype == "BYTES":
        items, position = [], 0
        while position < len(raw):
            if position + 4 > len(raw):
                raise TensorError(f"Input '{name}': a BYTES element's 4-byte length is cut short.")
            (length,) = struct.unpack_from("<I", raw, position)
            position += 4
            if position + length > len(raw):
                raise TensorError(f"Input '{name}': a BYTES element of {length} bytes runs past its data.")
            try:
                items.append(raw[position : position + length].decode("utf-8"))
            except UnicodeDecodeError:
                raise TensorError(f"Input '{name}': ModelHub reads BYTES as UTF-8 text; element is not.") from None
            position += length
        if len(items) != count:
            raise TensorError(f"Input '{name}' has shape {shape} ({count} elements) but holds {len(items)} strings.")
        return _reshaped(np.array(items, dtype=object), shape, name)
    dtype = NUMPY_TYPES[datatype].newbyteorder("<")
    if len(raw) != count * dtype.itemsize:
        raise TensorError(
            f"Input '{name}' has shape {shape} of {datatype}: {count * dtype.itemsize} bytes expected, {len(raw)} sent."
        )
    return _reshaped(np.frombuffer(raw, dtype=dtype).astype(NUMPY_TYPES[datatype]), shape, name)


def _requested_outputs(outputs, binary_default: bool) -> tuple[list[str] | None, set[str]]:
    if outputs is None:
        return None, {"*"} if binary_default else set()
    if not isinstance(outputs, list):
        raise TensorError("'outputs' must be a list of {\"name\": ...} objects.")
    names, binary = [], set()
    for index, output in enumerate(outputs):
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise TensorError(f'outputs[{index}] must be an object with a "name".')
        names.append(output["name"])
        wanted = _parameters(output.get("parameters"), f"output '{output['name']}'").get("binary_data", binary_default)
        if wanted:
            binary.add(output["name"])
    return names, binary


def encode_response(document: dict, outputs: list[tuple[str, np.ndarray, str]], binary: set[str]):
    """Return (body bytes, header length or None) for an inference response.

    ``outputs`` are (name, array, datatype); those named in ``binary`` (or all with "*") go as raw
    bytes after the JSON, the others as JSON ``data`` (flattened, row-major).
    """
    tensors, raw_parts = [], []
    for name, array, datatype in outputs:
        tensor = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if "*" in binary or name in binary:
            raw = _to_binary(array, datatype)
            tensor["parameters"] = {"binary_data_size": len(raw)}
            raw_parts.append(raw)
        else:
            tensor["data"] = array.reshape(-1).tolist()
        tensors.append(tensor)
    head = json.dumps({**document, "outputs": tensors}).encode()
    if not raw_parts:
        return head, None
    return head + b"".join(raw_parts), len(head)


def _to_binary(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        parts = []
        for item in array.reshape(-1):
            data = item if isinstance(item, bytes) else str(item).encode()
            parts.append(struct.pack("<I", len(data)) + data)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=NUMPY_TYPES[datatype].newbyteorder("<")).tobytes()
