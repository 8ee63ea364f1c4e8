"""Stage 2: ``config.json`` of an untrusted ``.keras`` file: size, depth, counts and the class allow-list."""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from modelhub.ml.errors import InvalidModelFileError, UnsafeModelError
from modelhub.ml.untrusted.keras_hub import declared_bytes, declared_params
from modelhub.ml.untrusted.limits import SAVE_HINT, Limits

# Layers that run arbitrary Python or load arbitrary TF graphs even in safe mode.
FORBIDDEN_CLASS_NAMES = frozenset({"Lambda", "__lambda__", "TFSMLayer", "TorchModuleWrapper"})
# Markers Keras writes into configs for plain data (tensors, numpy arrays, ...).
DATA_CLASS_NAMES = frozenset(
    {
        "__keras_tensor__",
        "__tensor__",
        "__numpy__",
        "__bytes__",
        "__ellipsis__",
        "__slice__",
        "__typespec__",
        "__tuple__",
    }
)
# keras-hub classes allowed by exact registered name. Their code ships in the installed
# keras-hub package, never in the upload, and their from_config only builds Keras layers
# from numbers (vocabulary size, widths, depths): no file, preset or URL is read. Any other
# registered name, from keras-hub or elsewhere, is refused.
ALLOWED_REGISTERED_NAMES = frozenset(
    {
        "keras_hub>BertBackbone",
        "keras_hub>TransformerEncoder",
        "keras_hub>PositionEmbedding",
        "keras_hub>TokenAndPositionEmbedding",
        "keras_hub>ReversibleEmbedding",
        "keras_hub>BertTextClassifier",
    }
)
# The keras-hub tasks among them, with their backbone's input names. A task's from_config builds
# its backbone (allowed above) and its own head layers (Dropout, Dense: built-in Keras); its
# preprocessor (a tokenizer with its vocabulary file) is never loaded: a task must be saved without.
KERAS_HUB_TASKS = {
    "keras_hub>BertTextClassifier": ("token_ids", "segment_ids", "padding_mask"),
}
# Config keys that are never deserialised because models are loaded with compile=False.
IGNORED_CONFIG_KEYS = frozenset({"compile_config"})
# A JSON string, possessive so it cannot fail once started: an unterminated one runs to the end
# (\Z). A pattern that can fail makes re.sub retry from every later quote: quadratic, and
# ``"\"\"\"…`` of 16 MiB would hold a worker for days.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(code for code in range(256) if code not in b"[]{}")
_BRACKET_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_DEPTH_CHUNK = 1024**2


def json_nesting_depth(raw: bytes) -> int:
    """Return the deepest nesting of ``[`` and ``{`` in JSON bytes, without parsing them.

    Strings are blanked out first, so brackets inside them do not count. Linear in the
    input and without recursion, so a config nested 10,000 deep costs what its bytes cost;
    memory is the input once more plus a 1 MiB chunk. The same rule as the web side's
    core.json_bounded.json_nesting_depth (this library imports no ModelHub app).

    Example:
        >>> json_nesting_depth(b'{"a": [1, {"b": "[["}]}')
        3
    """
    brackets = _JSON_STRING.sub(b'""', bytes(raw)).translate(None, _NOT_BRACKETS).translate(_BRACKET_STEPS)
    level, deepest = 0, 0
    for start in range(0, len(brackets), _DEPTH_CHUNK):
        count = min(_DEPTH_CHUNK, len(brackets) - start)
        levels = np.cumsum(np.frombuffer(brackets, dtype=np.int8, count=count, offset=start), dtype=np.int64) + level
        deepest, level = max(deepest, int(levels.max())), int(levels[-1])
    return deepest


def parse_json_member(raw: bytes, *, what: str, max_depth: int) -> Any:
    """Parse JSON bytes from an untrusted file after checking their nesting depth.

    Raises:
        InvalidModelFileError: too deep, not UTF-8 JSON.
    """
    depth = json_nesting_depth(raw)
    if depth > max_depth:
        raise InvalidModelFileError(
            f"Expected {what} nested at most {max_depth} levels deep, found {depth} levels. Keras configs "
            f"nest a few dozen levels; this one is refused before parsing. {SAVE_HINT}"
        )
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise InvalidModelFileError(f"Expected {what} to be JSON, it is not ({error}). {SAVE_HINT}") from error


def check_config_safe(config: Any, *, limits: Limits | None = None) -> None:
    """Refuse a Keras config that is too large or would deserialise Lambda layers or custom objects.

    Walks the config without recursion. Every serialised object must be a built-in Keras
    class (module ``keras`` or ``keras.*``) or an allow-listed keras-hub class, and none may
    be a Lambda layer. Every keras-hub task, wherever it sits, must come without its
    preprocessor; the weights the keras-hub objects declare in their configs (numbers such as
    ``vocabulary_size``, which Keras turns into variables while building) must fit
    ``max_declared_bytes`` together, and their declared layers ``max_layers``.

    Args:
        config: the parsed ``config.json`` (or any part of it).
        limits: ``max_layers``, ``max_config_objects`` and ``max_declared_bytes`` are used.

    Raises:
        UnsafeModelError: naming the offending layer or object and how to fix it.
        InvalidModelFileError: more layers or objects than the limits.
    """
    limits = limits or Limits()
    num_layers = 0
    num_objects = 0
    hub_bytes = 0
    stack: list[tuple[Any, str]] = [(config, "model")]
    while stack:
        node, trail = stack.pop()
        if isinstance(node, list):
            stack.extend((item, f"{trail}[{index}]") for index, item in reversed(list(enumerate(node))))
            continue
        if not isinstance(node, dict):
            continue
        layers = node.get("layers")
        if isinstance(layers, list):
            num_layers += len(layers)
            if num_layers > limits.max_layers:
                raise InvalidModelFileError(
                    f"Expected at most {limits.max_layers:,} layers in the model's config, found more "
                    f"(at {trail}). Split the model, or raise MODELHUB_MAX_MODEL_LAYERS."
                )
        class_name = node.get("class_name")
        if isinstance(class_name, str):
            num_objects += 1
            if num_objects > limits.max_config_objects:
                raise InvalidModelFileError(
                    f"Expected at most {limits.max_config_objects:,} serialised objects in the model's "
                    "config, found more. The config is refused before Keras reads it."
                )
            _check_object(node, class_name, trail)
            if isinstance(node.get("registered_name"), str) and node["registered_name"].startswith("keras_hub>"):
                check_task_preprocessor(node)
                hub_bytes += declared_bytes(node)
                num_layers += declared_params(node)[1]
                _check_declared(node, trail, hub_bytes, num_layers, limits)
        for key, value in reversed(list(node.items())):
            if key in IGNORED_CONFIG_KEYS:
                continue
            stack.append((value, f"{trail}.{key}" if key != "config" else trail))


def _check_declared(node: dict, trail: str, hub_bytes: int, num_layers: int, limits: Limits) -> None:
    """Refuse keras-hub configs declaring more weights or layers than the limits, before Keras builds them."""
    config = node.get("config") if isinstance(node.get("config"), dict) else {}
    where = f"{trail} ({node.get('registered_name')} {config.get('name', '')!r})"
    if num_layers > limits.max_layers:
        raise InvalidModelFileError(
            f"Expected at most {limits.max_layers:,} layers in the model's config, the keras-hub object at {where} "
            f"declares more ({num_layers:,} with the layers before it). Split the model, or raise "
            "MODELHUB_MAX_MODEL_LAYERS."
        )
    if hub_bytes > limits.max_declared_bytes:
        sizes = ", ".join(
            f"{key}={config[key]}"
            for key in ("vocabulary_size", "num_layers", "hidden_dim", "intermediate_dim", "input_dim", "output_dim")
            if key in config
        )
        raise InvalidModelFileError(
            f"Expected the keras-hub objects in the model's config to declare at most {limits.max_declared_bytes:,} "
            f"bytes of weights together, they declare {hub_bytes:,} (reached at {where}{': ' + sizes if sizes else ''}"
            "). Refused before Keras builds them. Save a smaller model, or raise MODELHUB_MAX_MODEL_DECLARED_BYTES."
        )


def check_task_preprocessor(config: Any) -> None:
    """Refuse a keras-hub task saved with a preprocessor (``config`` is the task's node, wherever it sits).

    Raises:
        UnsafeModelError: saying how to save the task without it and what the assembly takes.
    """
    if not isinstance(config, dict) or config.get("registered_name") not in KERAS_HUB_TASKS:
        return
    inner = config.get("config") if isinstance(config.get("config"), dict) else {}
    preprocessor = inner.get("preprocessor")
    if preprocessor is None:
        return
    kind = preprocessor.get("class_name", "a preprocessor") if isinstance(preprocessor, dict) else "a preprocessor"
    inputs = ", ".join(KERAS_HUB_TASKS[config["registered_name"]])
    raise UnsafeModelError(
        f"Expected the keras-hub task '{inner.get('name', config.get('class_name'))}' ({config.get('class_name')}) "
        f"saved without its preprocessor, received one with a {kind}. A preprocessor carries a tokenizer and its "
        "vocabulary, which ModelHub does not load. Save the task without it: `task.preprocessor = None; "
        "task.save('model.keras')` (or build it with preprocessor=None). The assembly then takes the backbone's "
        f"inputs, already tokenized: {inputs} (int32, [batch, sequence length]); run the preprocessor before "
        "calling it."
    )


def _check_object(node: dict, class_name: str, trail: str) -> None:
    inner = node.get("config")
    label = inner.get("name") if isinstance(inner, dict) else None
    where = f"{trail} ({class_name}{' ' + repr(label) if label else ''})"
    if class_name in FORBIDDEN_CLASS_NAMES:
        raise UnsafeModelError(
            f"Expected only built-in Keras layers, received a {class_name} layer at {where}. "
            "Lambda layers hold Python code and are never loaded. Replace the Lambda with "
            "built-in layers (e.g. keras.layers.Rescaling, Activation, Reshape) and save again."
        )
    module = node.get("module")
    registered = node.get("registered_name")
    if class_name in DATA_CLASS_NAMES or _allowed_registered(module, registered):
        return
    builtin_module = isinstance(module, str) and (module == "keras" or module.startswith("keras."))
    if module is not None and not builtin_module:
        raise UnsafeModelError(
            f"Expected only built-in Keras objects, received the custom object "
            f"'{registered or class_name}' from module '{module}' at {where}. Custom "
            "code is never loaded; rebuild the model from built-in Keras layers."
        )
    if isinstance(registered, str) and ">" in registered:
        raise UnsafeModelError(
            f"Expected only built-in Keras objects, received the registered custom "
            f"object '{registered}' at {where}. Custom code is never loaded; rebuild "
            "the model from built-in Keras layers."
        )


def _allowed_registered(module: Any, registered: Any) -> bool:
    return (
        isinstance(registered, str)
        and registered in ALLOWED_REGISTERED_NAMES
        and isinstance(module, str)
        and module.split(".")[0] == registered.split(">")[0]
    )
