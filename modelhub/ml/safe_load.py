"""Load uploaded Keras models without running uploaded code.

An uploaded model is untrusted input. Every byte of it is checked first by the one reader of
untrusted files, :mod:`modelhub.ml.untrusted` (zip, config allow-list, HDF5 structure,
declared sizes, finite weights), then by the flat graph's layout check (every stored weight
belongs to a layer of the config). Only then is the file loaded with ``safe_mode=True`` and
``compile=False``. SavedModel directories are refused outright: loading or calling one can run
arbitrary TensorFlow ops.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from modelhub.ml.errors import InvalidModelFileError, UnsafeModelError
from modelhub.ml.keras_file.archive import KerasArchive, import_registering_packages
from modelhub.ml.untrusted import SAVE_HINT, Limits, UntrustedKerasFile, check_config_safe
from modelhub.ml.untrusted.config import KERAS_HUB_TASKS

__all__ = [
    "check_config_safe",
    "check_keras_archive",
    "import_registering_packages",
    "keras_hub_task_name",
    "load_keras_model",
    "load_keras_task",
]


def check_keras_archive(path: str | os.PathLike[str], **limits: int) -> dict[str, Any]:
    """Check that ``path`` is a well-formed, safe ``.keras`` archive, reading every weight once.

    Nothing is deserialised by Keras. See :mod:`modelhub.ml.untrusted` for what is refused.

    Args:
        path: the uploaded file.
        **limits: fields of :class:`modelhub.ml.untrusted.Limits` (``max_bytes``,
            ``max_members``, ``max_uncompressed_bytes``, ``max_config_bytes``, ``max_layers``,
            ``max_datasets``, ``max_declared_bytes``, ...).

    Returns:
        ``{"bytes", "num_members", "uncompressed_bytes", "keras_version", "class_name",
        "num_weight_arrays", "declared_weight_bytes"}``.

    Raises:
        UnsafeModelError: a SavedModel, a Lambda layer, a custom object, links, external data...
        InvalidModelFileError: not a zip, too big, missing ``config.json``, forged sizes...

    Example:
        >>> check_keras_archive("uploads/model.keras")["class_name"]
        'Functional'
    """
    with _checked_archive(path, limits) as archive:
        return archive.file_info()


def _checked_archive(path: str | os.PathLike[str], limits: dict[str, int]) -> KerasArchive:
    """Open ``path`` through the untrusted-file reader, check its layout and read every weight once."""
    archive = KerasArchive(path, limits=Limits.from_kwargs(**limits))
    try:
        archive.check_layout()
        archive.check_values()
    except BaseException:
        archive.close()
        raise
    return archive


def load_keras_model(path: str | os.PathLike[str], **limits: int) -> Any:
    """Check and load an uploaded ``.keras`` model without running uploaded code.

    Args:
        path: the ``.keras`` file (the name need not end in ``.keras``).
        **limits: fields of :class:`modelhub.ml.untrusted.Limits`, as for
            :func:`check_keras_archive`.

    Returns:
        The uncompiled ``keras.Model``.

    Raises:
        UnsafeModelError, InvalidModelFileError: see :func:`check_keras_archive`;
            Keras' own loading errors are re-raised as ``InvalidModelFileError``.

    Example:
        >>> model = load_keras_model("uploads/3f2a.bin")
    """
    path = Path(path)
    with _checked_archive(path, limits) as archive:
        import_registering_packages(archive.config)
    return _keras_load(path)


def keras_hub_task_name(config: dict[str, Any]) -> str | None:
    """Return the registered name of an allowed keras-hub task at the top of a checked config, else None."""
    name = config.get("registered_name") if isinstance(config, dict) else None
    return name if name in KERAS_HUB_TASKS else None


def load_keras_task(path: str | os.PathLike[str], **limits: int) -> Any:
    """Check and load an uploaded keras-hub task (e.g. ``BertTextClassifier``) without running uploaded code.

    The same reader as :func:`load_keras_model` (zip, allow-listed config, HDF5 structure, every
    weight finite); a task's top level is its own class, not a Functional graph, so the layout
    check is replaced by a count: the loaded task must hold exactly the layer weights the file stores
    (optimizer state of a compiled task is not loaded).

    Raises:
        UnsafeModelError, InvalidModelFileError: see :func:`check_keras_archive`; also a file
            that is not an allowed task, or one saved with its preprocessor.
    """
    path = Path(path)
    with UntrustedKerasFile(path, limits=Limits.from_kwargs(**limits)) as file:
        if keras_hub_task_name(file.config) is None:
            raise InvalidModelFileError(
                f"Expected a keras-hub task ({', '.join(sorted(KERAS_HUB_TASKS))}) in '{path.name}', "
                f"received a {file.config.get('class_name')}."
            )
        file.check_values()
        stored = sum(1 for name in file.datasets if name.startswith("layers/"))  # not optimizer state
        import_registering_packages(file.config)
    task = _keras_load(path)
    if len(task.weights) != stored:
        raise InvalidModelFileError(
            f"Expected '{path.name}' to store exactly the {len(task.weights)} weights of its task, it stores "
            f"{stored}. {SAVE_HINT}"
        )
    return task


def _keras_load(path: Path) -> Any:
    import keras

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
