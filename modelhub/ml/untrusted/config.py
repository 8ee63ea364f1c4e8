"""Stage 2: ``config.json`` of an untrusted ``.keras`` file: size, depth, counts and the class allow-list."""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from modelhub.ml.errors import InvalidModelFileError, UnsafeModelError
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


def json_nesting_depth(raw: bytes) -> int:
    """Return the deepest nesting of ``[`` and ``{`` in JSON bytes, without parsing them.

    Strings are blanked out first, so brackets inside them do not count. Linear in the
    input and without recursion, so a config nested 10,000 deep costs what its bytes cost.

    Example:
        >>> json_nesting_depth(b'{"a": [1, {"b": "[["}]}')
        3
    """
    stripped = re.sub(rb'"(?:[^"\\]|\\.)*"', b'""', raw)
    codes = np.frombuffer(stripped, dtype=np.uint8)
    steps = np.zeros(codes.shape, dtype=np.int32)
    steps[(codes == ord("[")) | (codes == ord("{"))] = 1
    steps[(codes == ord("]")) | (codes == ord("}"))] = -1
    return int(np.cumsum(steps).max(initial=0))


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
    be a Lambda layer.

    Args:
        config: the parsed ``config.json`` (or any part of it).
        limits: ``max_layers`` and ``max_config_objects`` are used.

    Raises:
        UnsafeModelError: naming the offending layer or object and how to fix it.
        InvalidModelFileError: more layers or objects than the limits.
    """
    limits = limits or Limits()
    check_task_preprocessor(config)
    num_layers = 0
    num_objects = 0
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
        for key, value in reversed(list(node.items())):
            if key in IGNORED_CONFIG_KEYS:
                continue
            stack.append((value, f"{trail}.{key}" if key != "config" else trail))


def check_task_preprocessor(config: Any) -> None:
    """Refuse a keras-hub task (the top level of ``config``) saved with a preprocessor.

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
