"""bench/export.py at a tiny size: every figure it prints is there and consistent with its parts.

The same measure() as the benchmark, on the 8x8 conv backbone of tests/ml with 3 packed Dense heads:
the speedups are the ratios of the medians it reports, LiteRT has a size and a latency per
quantization, and every export passed its verification (float32 within 1e-5 of the SavedModel).
"""

from __future__ import annotations

import pytest

from bench import export as bench
from tests.ml.conftest import image_batch, make_backbone


def test_measure_reports_speedups_litert_sizes_and_export_over_build(tmp_path):
    report = bench.measure(
        make_backbone(), bench.dense_heads(3, features=6), None, lambda rows: image_batch(rows), tmp_path, repeats=2
    )
    for key in ("b1", "b32", "mixed"):
        assert report[f"onnx_speedup_{key}"] == pytest.approx(
            report[f"saved_model_{key}_ms"] / report[f"onnx_{key}_ms"], rel=5e-2
        )
    for key in ("b32", "mixed"):
        assert report[f"onnx_over_backbone_{key}"] > 0
    assert set(report["litert"]) == {"none", "float16", "dynamic_int8"}
    for figures in report["litert"].values():
        assert figures["size_bytes"] > 0 and figures["latency_ms"] > 0 and figures["export_over_build"] > 0
    assert report["litert"]["none"]["max_abs_diff"] <= 1e-5 and report["onnx"]["max_abs_diff"] <= 1e-5
