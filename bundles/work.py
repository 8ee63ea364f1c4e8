"""Worker side: write the deployment bundle under MODELHUB_BUNDLE_ROOT (the filesystem artifact store by default).

    tfserving/models.config                        ModelServerConfig (bundles.config), rewritten atomically
    tfserving/{team}.{backbone}/{assembly id}/     the assembly's SavedModel (saved_model.pb, variables/, assets/)
    triton/{team}.{backbone}/config.pbtxt          Triton model config (newest assembly with a verified ONNX export)
    triton/{team}.{backbone}/{assembly id}/model.onnx

SavedModel folders are extracted once from the assembly's verified blob (a folder already there is
left alone: assemblies are immutable). No TensorFlow is imported: the SavedModel is copied as built.
"""

import fcntl
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from django.conf import settings

from artifacts.services import blob_fetch_verified
from bundles.config import model_server_config
from bundles.selectors import bundle_assemblies, bundle_models, verified_onnx_export

logger = logging.getLogger(__name__)
CONFIG_NAME = "models.config"
# Held (flock) by the one task writing the bundle at a time.
LOCK_NAME = ".bundle.lock"


def bundle_root() -> Path:
    return Path(settings.MODELHUB_BUNDLE_ROOT)


def bundle_write() -> None:
    """Bring the bundle up to date: new SavedModel and ONNX folders, then models.config and config.pbtxt files.

    One writer at a time (an exclusive lock on LOCK_NAME under the root, held until the end):
    rewrites queued close together (assembly.ready, alias.moved) run one after the other, so a
    file TF Serving polls is never published half-written by another task.
    """
    root = bundle_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_NAME, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes (or the process dies)
        _write_bundle(root)


def _write_bundle(root: Path) -> None:
    newest_onnx: dict[str, tuple] = {}
    for assembly in bundle_assemblies():
        name = f"{assembly.team.slug}.{assembly.backbone.name}"
        try:
            folder = _inside(root, root / "tfserving" / name / str(assembly.pk))
            _saved_model_folder(assembly, folder)
            export = verified_onnx_export(assembly=assembly)
            if export is not None:
                onnx_path = _onnx_file(export, _inside(root, root / "triton" / name / str(assembly.pk) / "model.onnx"))
                newest_onnx[name] = (assembly.pk, onnx_path)
        except Exception:  # noqa: BLE001 - one bad assembly must not stop the rest of the bundle
            logger.exception("bundle: could not write assembly %s", assembly.pk)
    base_path = settings.MODELHUB_TFSERVING_BASE_PATH or str(root / "tfserving")
    _write_atomically(root / "tfserving" / CONFIG_NAME, model_server_config(bundle_models(), base_path=base_path))
    for name, (_, onnx_path) in newest_onnx.items():
        try:
            _write_atomically(_inside(root, root / "triton" / name / "config.pbtxt"), triton_config(name, onnx_path))
        except Exception:  # noqa: BLE001
            logger.exception("bundle: could not write the Triton config of %s", name)


def _inside(root: Path, path: Path) -> Path:
    """Return `path` when it resolves inside the bundle root, else raise ValueError (names are not trusted)."""
    if not path.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"bundle path {path} is outside the bundle root {root}: refused")
    return path


def _saved_model_folder(assembly, folder: Path) -> None:
    if (folder / "saved_model.pb").exists():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".partial-") as tmp:
        archive = blob_fetch_verified(blob=assembly.blob, destination=Path(tmp) / "model.zip")
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(Path(tmp) / "out")  # ModelHub's own zip (assemblies.work.building.zip_directory)
        if (folder / "saved_model.pb").exists():
            return  # put in place meanwhile (and maybe being loaded by TF Serving): never replaced
        if folder.exists():
            shutil.rmtree(folder)  # an unfinished leftover: no saved_model.pb in it
        (Path(tmp) / "out" / "model").rename(folder)


def _onnx_file(export, path: Path) -> Path:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".partial-") as tmp:
            fetched = blob_fetch_verified(blob=export.blob, destination=Path(tmp) / path.name)
            os.replace(fetched, path)
    return path


def _write_atomically(path: Path, text: str) -> None:
    """Write `text` to a staging file of a unique name beside `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(handle, "w") as staged:
            staged.write(text)
        os.chmod(staging, 0o644)  # mkstemp makes it 0600; TF Serving and Triton may run as other users
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


ONNX_TO_TRITON = {1: "TYPE_FP32", 2: "TYPE_UINT8", 6: "TYPE_INT32", 7: "TYPE_INT64", 8: "TYPE_STRING"}
ONNX_TO_TRITON.update({9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64"})
MAX_BATCH_SIZE = 64


def triton_config(name: str, onnx_path: Path) -> str:
    """Return config.pbtxt for an ONNX export: onnxruntime_onnx, inputs and outputs with dims, dynamic batching.

    The first dimension of every tensor is the batch (max_batch_size); a tensor of shape [batch]
    (task_id, output_width) is dims [1] reshaped to [].
    """
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph

    def tensors(values, kind: str) -> list[str]:
        lines = []
        for value in values:
            kind_type = value.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in kind_type.shape.dim][1:]
            lines += [
                f"{kind} {{",
                f'  name: "{value.name}"',
                f"  data_type: {ONNX_TO_TRITON.get(kind_type.elem_type, 'TYPE_FP32')}",
            ]
            lines += [f"  dims: [ {', '.join(str(d) for d in dims or [1])} ]"] + (
                ["  reshape: { shape: [ ] }"] if not dims else []
            )
            lines.append("}")
        return lines

    lines = [f'name: "{name}"', 'platform: "onnxruntime_onnx"', f"max_batch_size: {MAX_BATCH_SIZE}"]
    lines += tensors(graph.input, "input") + tensors(graph.output, "output")
    lines += ["dynamic_batching { }", "version_policy: { latest: { num_versions: 1 } }"]
    return "\n".join(lines) + "\n"
