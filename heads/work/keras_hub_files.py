"""Worker side: an import file that holds a keras-hub task is read as the full model it stands for.

Why: ``task.save("x.keras")`` of a ``BertTextClassifier`` stores the task class at the top of the
file, which the family split cannot line up with other files. Each such file is rewritten once
per import (modelhub.ml.keras_hub_tasks: loaded through the untrusted reader, rebuilt as a plain
functional model over the same layers, verified against the task) and the split reads the
rewritten file instead. Any other file passes through untouched.
"""

import shutil
import tempfile
from pathlib import Path

from backbones.work.loading import model_file_limits


class TaskFiles:
    """Rewrites of an import's keras-hub task files, made once and kept for the whole import.

    Use as a context manager around the split; ``rewrites`` maps file index to what was done
    (:meth:`modelhub.ml.keras_hub_tasks.TaskRewrite.as_dict`) for the import's report.
    """

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="modelhub-tasks-")
        self._paths: dict[int, Path] = {}
        self.rewrites: dict[int, dict] = {}

    def __enter__(self) -> "TaskFiles":
        return self

    def __exit__(self, *exc: object) -> None:
        self._tmp.cleanup()

    def full_model(self, index: int, path: Path) -> Path:
        """Return the file to read for import file ``index`` fetched at ``path`` (beside it when rewritten).

        Raises:
            MLError: the task is refused (saved with a preprocessor, not allow-listed...) or its
                rewrite does not reproduce it.
        """
        from modelhub.ml.keras_hub_tasks import keras_hub_task_file, task_as_functional

        target = path.with_name(f"{path.stem}-as-model.keras")
        if index in self._paths:
            shutil.copyfile(self._paths[index], target)
            return target
        limits = model_file_limits()
        if keras_hub_task_file(path, **limits) is None:
            return path
        kept = Path(self._tmp.name) / f"file-{index}.keras"
        self.rewrites[index] = task_as_functional(path, kept, **limits).as_dict()
        self._paths[index] = kept
        shutil.copyfile(kept, target)
        return target
