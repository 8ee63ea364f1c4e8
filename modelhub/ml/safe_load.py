"""Load uploaded Keras models without running uploaded code.

An uploaded model is untrusted input. This module checks the ``.keras`` zip archive
itself (size, member count, total uncompressed size, member paths), then reads
``config.json`` and refuses Lambda layers and any object that is not a built-in Keras
class *before* Keras deserialises anything. Only then is the file loaded with
``safe_mode=True`` and ``compile=False``. SavedModel directories are refused outright:
loading or calling one can run arbitrary TensorFlow ops.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from modelhub.ml.errors import InvalidModelFileError, UnsafeModelError

DEFAULT_MAX_BYTES = 2 * 1024**3
DEFAULT_MAX_MEMBERS = 10_000
DEFAULT_MAX_UNCOMPRESSED_BYTES = 8 * 1024**3
MAX_CONFIG_BYTES = 64 * 1024**2

CONFIG_MEMBER = "config.json"
SAVE_HINT = 'Save the model with model.save("x.keras") and upload that single file.'

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
    }
)
# Config keys that are never deserialised because models are loaded with compile=False.
IGNORED_CONFIG_KEYS = frozenset({"compile_config"})


def check_keras_archive(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
    max_uncompressed_bytes: int = DEFAULT_MAX_UNCOMPRESSED_BYTES,
) -> dict[str, Any]:
    """Check that ``path`` is a well-formed, safe ``.keras`` zip archive.

    Nothing is deserialised: only the zip directory and ``config.json`` are read.

    Args:
        path: the uploaded file.
        max_bytes: largest accepted file size.
        max_members: largest accepted number of zip members.
        max_uncompressed_bytes: largest accepted total uncompressed size (zip bombs).

    Returns:
        ``{"bytes": int, "num_members": int, "uncompressed_bytes": int,
        "keras_version": str | None, "class_name": str}``.

    Raises:
        UnsafeModelError: a SavedModel, a Lambda layer, a custom object, unsafe paths.
        InvalidModelFileError: not a zip, too big, missing ``config.json``.

    Example:
        >>> check_keras_archive("uploads/model.keras")["class_name"]
        'Functional'
    """
    path = Path(path)
    if path.is_dir():
        raise UnsafeModelError(
            f"Expected a single .keras file, received the directory '{path}' "
            "(a SavedModel or an unpacked archive). SavedModels can run arbitrary "
            f"TensorFlow ops when loaded, so they are not accepted. {SAVE_HINT}"
        )
    if not path.is_file():
        raise InvalidModelFileError(f"Expected a .keras file at '{path}', but nothing is there.")
    if path.name == "saved_model.pb" or path.suffix == ".pb":
        raise UnsafeModelError(
            f"Expected a .keras file, received the SavedModel graph '{path.name}'. "
            f"SavedModels can run arbitrary TensorFlow ops, so they are not accepted. {SAVE_HINT}"
        )
    size = path.stat().st_size
    if size > max_bytes:
        raise InvalidModelFileError(
            f"Expected a .keras file of at most {max_bytes} bytes, received {size} bytes. "
            "Upload a smaller model or raise the limit."
        )
    if not zipfile.is_zipfile(path):
        with path.open("rb") as handle:
            head = handle.read(8)
        kind = "an HDF5 (.h5) file" if head.startswith(b"\x89HDF") else "a file that is not a zip"
        raise InvalidModelFileError(f"Expected a .keras zip archive, received {kind} ('{path.name}'). {SAVE_HINT}")
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if len(members) > max_members:
                raise InvalidModelFileError(
                    f"Expected at most {max_members} members in the .keras archive, "
                    f"received {len(members)}. {SAVE_HINT}"
                )
            uncompressed = 0
            names = set()
            for member in members:
                _check_member_name(member.filename)
                uncompressed += member.file_size
                names.add(member.filename)
            if uncompressed > max_uncompressed_bytes:
                raise InvalidModelFileError(
                    f"Expected at most {max_uncompressed_bytes} uncompressed bytes, the archive "
                    f"declares {uncompressed} (compressed {size}); it looks like a zip bomb. "
                    f"{SAVE_HINT}"
                )
            if "saved_model.pb" in {Path(name).name for name in names}:
                raise UnsafeModelError(
                    "Expected a .keras archive, received a zipped SavedModel (saved_model.pb). "
                    f"SavedModels can run arbitrary TensorFlow ops. {SAVE_HINT}"
                )
            if CONFIG_MEMBER not in names:
                raise InvalidModelFileError(
                    f"Expected '{CONFIG_MEMBER}' inside the .keras archive, found only "
                    f"{sorted(names)[:10]}. {SAVE_HINT}"
                )
            config_info = archive.getinfo(CONFIG_MEMBER)
            if config_info.file_size > MAX_CONFIG_BYTES:
                raise InvalidModelFileError(
                    f"Expected config.json of at most {MAX_CONFIG_BYTES} bytes, received {config_info.file_size}."
                )
            raw_config = archive.read(CONFIG_MEMBER)
            raw_metadata = archive.read("metadata.json") if "metadata.json" in names else b"{}"
    except zipfile.BadZipFile as error:
        raise InvalidModelFileError(
            f"Expected a readable .keras zip archive, '{path.name}' is corrupt: {error}. {SAVE_HINT}"
        ) from error
    try:
        config = json.loads(raw_config)
        metadata = json.loads(raw_metadata)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidModelFileError(f"Expected config.json to be JSON, it is not ({error}). {SAVE_HINT}") from error
    if not isinstance(config, dict) or "class_name" not in config:
        raise InvalidModelFileError(
            "Expected config.json to describe a Keras model (a dict with 'class_name'), "
            f"received {type(config).__name__}. {SAVE_HINT}"
        )
    check_config_safe(config)
    return {
        "bytes": size,
        "num_members": len(members),
        "uncompressed_bytes": uncompressed,
        "keras_version": metadata.get("keras_version") if isinstance(metadata, dict) else None,
        "class_name": config["class_name"],
    }


def check_config_safe(config: Any) -> None:
    """Refuse a Keras config that would deserialise Lambda layers or custom objects.

    Walks the config recursively. Every serialised object must be a built-in Keras
    class (module ``keras`` or ``keras.*``), and none may be a Lambda layer.

    Args:
        config: the parsed ``config.json`` (or any part of it).

    Raises:
        UnsafeModelError: naming the offending layer or object and how to fix it.
    """
    _walk_config(config, trail="model")


def load_keras_model(path: str | os.PathLike[str], **limits: int) -> Any:
    """Check and load an uploaded ``.keras`` model without running uploaded code.

    Args:
        path: the ``.keras`` file (the name need not end in ``.keras``).
        **limits: ``max_bytes``, ``max_members``, ``max_uncompressed_bytes`` for
            :func:`check_keras_archive`.

    Returns:
        The uncompiled ``keras.Model``.

    Raises:
        UnsafeModelError, InvalidModelFileError: see :func:`check_keras_archive`;
            Keras' own loading errors are re-raised as ``InvalidModelFileError``.

    Example:
        >>> model = load_keras_model("uploads/3f2a.bin")
    """
    import keras

    check_keras_archive(path, **limits)
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        import_registering_packages(json.loads(archive.read(CONFIG_MEMBER)))
    with tempfile.TemporaryDirectory(prefix="modelhub-load-") as tmp:
        load_path = path
        if path.suffix != ".keras":
            load_path = Path(tmp) / "model.keras"
            os.symlink(path.resolve(), load_path)
        try:
            model = keras.saving.load_model(load_path, safe_mode=True, compile=False)
        except Exception as error:  # Keras raises ValueError/TypeError/KeyError/OSError...
            message = str(error)
            if "lambda" in message.lower() or "safe_mode" in message:
                raise UnsafeModelError(
                    f"Keras refused to deserialise '{path.name}' in safe mode: {message}. "
                    "Replace Lambda layers and custom code with built-in Keras layers."
                ) from error
            raise InvalidModelFileError(
                f"Expected a loadable Keras 3 model, loading '{path.name}' failed with "
                f"{type(error).__name__}: {message}. {SAVE_HINT}"
            ) from error
    if not isinstance(model, keras.Model):
        raise InvalidModelFileError(f"Expected a keras.Model, the file holds a {type(model).__name__}. {SAVE_HINT}")
    return model


def _check_member_name(name: str) -> None:
    normalized = name.replace("\\", "/")
    parts = normalized.split("/")
    if normalized.startswith("/") or (len(normalized) > 1 and normalized[1] == ":"):
        raise UnsafeModelError(
            f"Expected relative member paths in the .keras archive, received the absolute path '{name}'. {SAVE_HINT}"
        )
    if ".." in parts:
        raise UnsafeModelError(
            f"Expected member paths inside the archive, received '{name}' which escapes it with '..'. {SAVE_HINT}"
        )


def import_registering_packages(config: Any) -> None:
    """Import keras-hub when a checked config names its allowed classes, so Keras can find them.

    Raises:
        UnsafeModelError: the model needs keras-hub and it is not installed.
    """
    if '"keras_hub>' not in json.dumps(config):
        return
    try:
        import keras_hub  # noqa: F401
    except ImportError as error:
        raise UnsafeModelError(
            "Expected keras-hub to be installed to load this model (it uses keras-hub classes), "
            "but it is not. Install the project's requirements."
        ) from error


def _allowed_registered(module: Any, registered: Any) -> bool:
    return (
        isinstance(registered, str)
        and registered in ALLOWED_REGISTERED_NAMES
        and isinstance(module, str)
        and module.split(".")[0] == registered.split(">")[0]
    )


def _walk_config(node: Any, trail: str) -> None:
    if isinstance(node, list):
        for index, item in enumerate(node):
            _walk_config(item, f"{trail}[{index}]")
        return
    if not isinstance(node, dict):
        return
    class_name = node.get("class_name")
    if isinstance(class_name, str):
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
        if class_name not in DATA_CLASS_NAMES and not _allowed_registered(module, registered):
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
    for key, value in node.items():
        if key in IGNORED_CONFIG_KEYS:
            continue
        _walk_config(value, f"{trail}.{key}" if key != "config" else trail)
