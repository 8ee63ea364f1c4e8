"""The converters and runtimes are pinned together: a move that breaks conversion fails here.

requirements.txt pins tf2onnx, onnx, onnxruntime and ai-edge-litert (with TensorFlow). This test
reads the pins, checks the installed versions are those, and converts a tiny assembly with them
to ONNX and LiteRT, both verified against the SavedModel, and quantizes the ONNX export with
onnxruntime's own quantizers (so a pin bump that installs but no longer converts or quantizes, or
produces something the runtime refuses, fails the suite).
"""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import numpy as np

from modelhub.ml.assembly.build import build_assembly
from modelhub.ml.assembly.manifest import AssemblyHead
from modelhub.ml.export import export_assembly
from tests.ml.conftest import image_batch, make_backbone, make_dense_head

PINNED = ("tf2onnx", "onnx", "onnxruntime", "ai-edge-litert", "tensorflow-cpu")


def _pins() -> dict[str, str]:
    text = (Path(__file__).resolve().parents[2] / "requirements.txt").read_text()
    return {m.group(1).lower(): m.group(2) for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==(\S+)", text, re.M)}


def test_the_pinned_versions_are_installed_and_convert_a_tiny_assembly(tmp_path):
    pins = _pins()
    assert set(PINNED) <= set(pins), sorted(pins)
    installed = {name: version(name) for name in PINNED}
    assert installed == {name: pins[name] for name in PINNED}
    backbone = make_backbone()
    heads = [AssemblyHead(f"t{i}", make_dense_head(3, seed=i), 1, "0" * 64) for i in range(2)]
    info = {"name": "bb", "version": 1, "sha256": "0" * 64}
    build_assembly(backbone=backbone, heads=heads, export_dir=tmp_path / "sm", backbone_info=info)
    for fmt in ("onnx", "litert"):
        report = export_assembly(
            backbone=backbone,
            heads=heads,
            trunk=None,
            saved_model_dir=tmp_path / "sm",
            fmt=fmt,
            quantization="none",
            out_path=tmp_path / f"m.{fmt}",
            probe_inputs=image_batch(3),
        )
        assert report["passed"] and report["max_abs_diff"] <= 1e-5, report
        assert np.all([t["argmax_agreement"] == 1.0 for t in report["tasks"]])
    # ONNX quantization uses onnxruntime's own quantizers (quantize_dynamic, transformers.float16):
    # pinned with onnxruntime, they must still produce a file ONNX Runtime opens and that verifies.
    for quantization in ("dynamic_int8", "float16"):
        report = export_assembly(
            backbone=backbone,
            heads=heads,
            trunk=None,
            saved_model_dir=tmp_path / "sm",
            fmt="onnx",
            quantization=quantization,
            out_path=tmp_path / f"m-{quantization}.onnx",
            probe_inputs=image_batch(3),
        )
        assert report["passed"] and report["max_abs_diff"] < 5e-2, report
