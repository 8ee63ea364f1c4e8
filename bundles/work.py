"""Worker side: write the deployment bundle under MODELHUB_BUNDLE_ROOT (the filesystem artifact store by default).

    tfserving/models.config                        ModelServerConfig (bundles.config), rewritten atomically
    tfserving/{team}.{backbone}/{assembly id}/     the assembly's SavedModel (saved_model.pb, variables/, assets/)
    triton/{team}.{backbone}/config.pbtxt          Triton model config (newest assembly with a verified ONNX export)
    triton/{team}.{backbone}/{assembly id}/model.onnx

SavedModel folders are extracted once from the assembly's verified blob (a folder already there is
left alone: assemblies are immutable). No TensorFlow is imported: the SavedModel is copied as built.
"""

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


def bundle_root() -> Path:
    return Path(settings.MODELHUB_BUNDLE_ROOT)


def bundle_write() -> None:
    """Bring the bundle up to date: new SavedModel and ONNX folders, then models.config and config.pbtxt files."""
    root = bundle_root()
    newest_onnx: dict[str, tuple] = {}
    for assembly in bundle_assemblies():
        name = f"{assembly.team.slug}.{assembly.backbone.name}"
        try:
            _saved_model_folder(assembly, root / "tfserving" / name / str(assembly.pk))
            export = verified_onnx_export(assembly=assembly)
            if export is not None:
                onnx_path = _onnx_file(export, root / "triton" / name / str(assembly.pk) / "model.onnx")
                newest_onnx[name] = (assembly.pk, onnx_path)
        except Exception:  # noqa: BLE001 - one bad assembly must not stop the rest of the bundle
            logger.exception("bundle: could not write assembly %s", assembly.pk)
    base_path = settings.MODELHUB_TFSERVING_BASE_PATH or str(root / "tfserving")
    _write_atomically(root / "tfserving" / CONFIG_NAME, model_server_config(bundle_models(), base_path=base_path))
    for name, (_, onnx_path) in newest_onnx.items():
        _write_atomically(root / "triton" / name / "config.pbtxt", triton_config(name, onnx_path))


def _saved_model_folder(assembly, folder: Path) -> None:
    if (folder / "saved_model.pb").exists():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".partial-") as tmp:
        archive = blob_fetch_verified(blob=assembly.blob, destination=Path(tmp) / "model.zip")
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(Path(tmp) / "out")  # ModelHub's own zip (assemblies.work.building.zip_directory)
        shutil.rmtree(folder, ignore_errors=True)
        (Path(tmp) / "out" / "model").rename(folder)


def _onnx_file(export, path: Path) -> Path:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fetched = blob_fetch_verified(blob=export.blob, destination=path.with_suffix(".partial"))
        os.replace(fetched, path)
    return path


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial")
    staging.write_text(text)
    os.replace(staging, path)


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
