"""Exports of an assembly (modelhub.ml.export): ONNX and LiteRT, checked against the SavedModel AND Keras.

Tiny backbones (tests/ml/conftest.py) with Dense, MLP and non-chain heads; a branched MobileNetV2
family (tests/branched_models.py). Every output is compared with the SavedModel (what the export
verification does) and with ``head(backbone(x))`` computed by Keras here, independently.
"""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest

from modelhub.ml.assembly.build import build_assembly
from modelhub.ml.assembly.manifest import AssemblyHead
from modelhub.ml.errors import ExportError, InvalidTaskIdError
from modelhub.ml.export import export_assembly, open_onnx_runner
from modelhub.ml.export.litert import LiteRunner
from modelhub.ml.export.onnx import OnnxRunner
from tests.ml.conftest import image_batch, make_backbone, make_branchy_head, make_dense_head, make_mlp_head

INFO = {"name": "bb", "version": 1, "sha256": "0" * 64}


@pytest.fixture(scope="module")
def assembly(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    backbone = make_backbone()
    models = [
        make_dense_head(3, seed=1),
        make_dense_head(3, seed=5),
        make_dense_head(3, seed=6),
        make_dense_head(5, activation="sigmoid", seed=7),
        make_mlp_head(4),
        make_branchy_head(),
    ]
    heads = [AssemblyHead(f"task{i}", m, 1, "0" * 64) for i, m in enumerate(models)]
    build_assembly(
        backbone=backbone, heads=heads, export_dir=folder / "sm", backbone_info=INFO, per_head_signatures=True
    )
    return folder, backbone, heads


def _export(assembly, fmt, quantization="none", **kwargs):
    folder, backbone, heads = assembly
    out = folder / f"{fmt}-{quantization}-{len(kwargs)}.bin"
    report = export_assembly(
        backbone=backbone,
        heads=heads,
        trunk=None,
        saved_model_dir=folder / "sm",
        fmt=fmt,
        quantization=quantization,
        out_path=out,
        probe_inputs=image_batch(4),
        **kwargs,
    )
    return out, report


def _keras_rows(backbone, heads, images, task_ids):
    features = np.asarray(backbone(images, training=False))
    expected = np.zeros((len(task_ids), 5), np.float32)
    for row, task_id in enumerate(task_ids):
        out = np.asarray(heads[task_id].model(features[row : row + 1], training=False))[0]
        expected[row, : out.shape[0]] = out
    return expected


def test_onnx_export_matches_keras_on_a_mixed_batch_and_reports_every_task(assembly):
    folder, backbone, heads = assembly
    out, report = _export(assembly, "onnx")
    assert report["passed"] and report["format"] == "onnx" and report["only_present_tasks"]
    assert [t["task_id"] for t in report["tasks"]] == list(range(len(heads)))
    assert all(t["argmax_agreement"] == 1.0 and t["max_abs_diff"] <= 1e-5 for t in report["tasks"])
    assert report["size_bytes"] == out.stat().st_size and report["runtime"].startswith("onnxruntime")
    runner = open_onnx_runner(out)
    assert runner.input_names == ["inputs"] and runner.tasks == [h.task for h in heads]
    task_ids = np.array([5, 0, 4, 3, 3, 1, 2, 0, 5], np.int32)
    images = image_batch(len(task_ids), seed=9)
    outputs, widths = runner.run({"inputs": images}, task_ids)
    np.testing.assert_array_equal(widths, [[3, 3, 3, 5, 4, 3][t] for t in task_ids])
    np.testing.assert_allclose(outputs, _keras_rows(backbone, heads, images, task_ids), atol=1e-5)


def test_onnx_rows_read_only_their_own_heads_kernels(assembly):
    """The stacked [T, F, W] kernels are only ever Gathered (one task's slice per row), never multiplied whole."""
    out, _ = _export(assembly, "onnx")
    model = onnx.load(str(out))
    stacked = {i.name for i in model.graph.initializer if len(i.dims) == 3 and i.dims[0] == 3}
    assert stacked, [list(i.dims) for i in model.graph.initializer]
    consumers = [n for n in model.graph.node if stacked & set(n.input)]
    assert consumers and all(n.op_type == "Gather" for n in consumers), [n.op_type for n in consumers]
    assert "Loop" not in {n.op_type for n in model.graph.node}


def test_onnx_runner_refuses_bad_task_ids_and_inputs(assembly):
    out, _ = _export(assembly, "onnx")
    runner = open_onnx_runner(out)
    with pytest.raises(InvalidTaskIdError, match="expected 0 <= task_id < 6"):
        runner.run({"inputs": image_batch(2)}, [0, 6])
    with pytest.raises(ExportError, match="missing \\['inputs'\\]"):
        runner.run({"image": image_batch(2)}, [0, 1])
    with pytest.raises(ExportError, match="one task_id per input row"):
        runner.run({"inputs": image_batch(2)}, [0])


@pytest.mark.parametrize("quantization", ["none", "float16", "dynamic_int8"])
def test_litert_export_per_quantization_with_per_task_signatures(assembly, quantization):
    folder, backbone, heads = assembly
    out, report = _export(assembly, "litert", quantization)
    assert report["quantization"] == quantization and report["signatures"][0] == "serving_default"
    assert report["signatures"][1:] == [h.task for h in heads]  # the assembly has per-task signatures
    assert {t["task_id"] for t in report["tasks"]} == set(range(len(heads)))
    runner = LiteRunner(out, num_tasks=len(heads), input_names=["inputs"])
    task_ids = np.array([0, 5, 4, 3, 2, 1], np.int32)
    images = image_batch(len(task_ids), seed=11)
    outputs, widths = runner.run({"inputs": images}, task_ids)
    expected = _keras_rows(backbone, heads, images, task_ids)
    atol = 1e-5 if quantization == "none" else 5e-2
    np.testing.assert_allclose(outputs, expected, atol=atol)
    assert np.all(outputs[task_ids == 0, 3:] == 0)
    np.testing.assert_allclose(
        runner.run_task("task3", {"inputs": images}),
        expected[:, :5] * 0 + _keras_rows(backbone, heads, images, np.full(len(task_ids), 3))[:, :5],
        atol=atol,
    )
    if quantization == "none":
        assert report["passed"] and report["max_abs_diff"] <= 1e-5


def test_dataset_agreement_is_reported_per_named_task(assembly):
    _, backbone, heads = assembly
    images = image_batch(10, seed=3)
    features = np.asarray(backbone(images, training=False))
    labels = np.argmax(np.asarray(heads[4].model(features)), axis=1)
    _, report = _export(assembly, "onnx", dataset=(images, {"task4": labels, "task0": None}))
    by_task = {t["task"]: t for t in report["dataset"]["tasks"]}
    assert report["dataset"]["rows"] == 10
    assert by_task["task4"]["accuracy_saved_model"] == 1.0 == by_task["task4"]["accuracy_export"]
    assert by_task["task0"]["argmax_agreement"] == 1.0 and "accuracy_export" not in by_task["task0"]


@pytest.mark.parametrize("quantization", ["float16", "dynamic_int8"])
def test_onnx_quantized_exports_are_reported_per_task_and_match_keras_closely(assembly, quantization):
    """ONNX Runtime's quantizers: int8 weights (MatMulInteger/ConvInteger) or float16 weights, float32 in and out."""
    folder, backbone, heads = assembly
    out, report = _export(assembly, "onnx", quantization)
    assert (report["format"], report["quantization"], report["passed"]) == ("onnx", quantization, True)
    assert {t["task_id"] for t in report["tasks"]} == set(range(len(heads)))
    assert all(0 < t["max_abs_diff"] < 5e-2 and 0 <= t["argmax_agreement"] <= 1 for t in report["tasks"])
    assert report["max_abs_diff"] == max(t["max_abs_diff"] for t in report["tasks"])
    model = onnx.load(str(out))
    ops = {node.op_type for node in model.graph.node}
    if quantization == "dynamic_int8":
        assert {"DynamicQuantizeLinear", "ConvInteger"} <= ops, ops
    else:
        assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    assert any(quantization.split("_")[0] in note for note in report["notes"]), report["notes"]
    runner = open_onnx_runner(out)  # the task table travelled through the quantizer
    assert runner.tasks == [h.task for h in heads] and runner.input_names == ["inputs"]
    task_ids = np.array([5, 0, 4, 3, 3, 1, 2, 0, 5], np.int32)
    images = image_batch(len(task_ids), seed=9)
    outputs, widths = runner.run({"inputs": images}, task_ids)
    assert outputs.dtype == np.float32
    np.testing.assert_array_equal(widths, [[3, 3, 3, 5, 4, 3][t] for t in task_ids])
    expected = _keras_rows(backbone, heads, images, task_ids)
    np.testing.assert_allclose(outputs, expected, atol=5e-2)
    assert np.all(outputs[expected == 0] == 0)  # zero padding past each task's width
    assert not np.array_equal(outputs, expected)  # really quantized


def test_a_quantizer_failure_is_an_export_error_naming_the_quantization(assembly, monkeypatch):
    import onnxruntime.quantization

    def fail(*args, **kwargs):
        raise RuntimeError("quantizer cannot handle node X")

    monkeypatch.setattr(onnxruntime.quantization, "quantize_dynamic", fail)
    with pytest.raises(ExportError, match="Cannot quantize the ONNX export to dynamic_int8 .*quantizer cannot handle"):
        _export(assembly, "onnx", "dynamic_int8")
    assert not list(assembly[0].glob("*.partial*")) and not list(assembly[0].glob(".*partial*"))


def test_dataset_agreement_bounds_tasks_times_rows_and_keeps_the_labelled_tasks(assembly):
    from modelhub.ml.export import verify
    from modelhub.ml.export.onnx import OnnxRunner

    folder, backbone, heads = assembly
    out, _ = _export(assembly, "onnx", "dynamic_int8")
    images = image_batch(10, seed=4)
    labels = np.arange(10) % 3
    y = {h.task: None for h in heads} | {"task2": labels}
    tasks, widths = [h.task for h in heads], [3, 3, 3, 5, 4, 3]
    found = verify.dataset_agreement(
        run_export=OnnxRunner(out).run, saved_model_dir=str(folder / "sm"), backbone=backbone,
        dataset=(images, y), tasks=tasks, widths=widths, max_evaluations=30,
    )  # fmt: skip
    assert found["tasks_named"] == 6 and [t["task"] for t in found["tasks"]] == ["task0", "task2", "task5"]
    by_task = {t["task"]: t for t in found["tasks"]}
    keras_out = _keras_rows(backbone, heads, images, np.full(10, 2))[:, :3]
    assert by_task["task2"]["accuracy_saved_model"] == pytest.approx(np.mean(np.argmax(keras_out, 1) == labels))
    with pytest.raises(ExportError, match="Expected 10 labels for task 'task2'"):
        verify.dataset_agreement(
            run_export=OnnxRunner(out).run, saved_model_dir=str(folder / "sm"), backbone=backbone,
            dataset=(images, {"task2": labels[:4]}), tasks=tasks, widths=widths,
        )  # fmt: skip


def test_an_export_off_the_saved_model_is_refused(assembly, monkeypatch):
    original = OnnxRunner.run

    def off(self, inputs, task_id):
        outputs, widths = original(self, inputs, task_id)
        return outputs + np.where(outputs != 0, 1e-3, 0).astype(np.float32), widths

    monkeypatch.setattr(OnnxRunner, "run", off)
    folder = assembly[0]
    with pytest.raises(ExportError, match="reproduce the SavedModel within .* for task 'task0'"):
        _export(assembly, "onnx")
    assert not list(folder.glob("*.partial")) and not (folder / "onnx-none-0.bin.partial").exists()


def test_a_runtime_that_cannot_run_the_export_is_an_export_error(assembly, monkeypatch):
    # The LiteRT interpreter's XNNPACK delegate refuses some graphs at run time ("failed to reshape"),
    # seen with 50 branched tasks in bench/export.py; the export is then refused with the reason.
    from modelhub.ml.export.litert import LiteRunner

    def refuse(self, inputs, task_id):
        raise RuntimeError("XNNPack delegate failed to reshape runtimeNode number 815")

    monkeypatch.setattr(LiteRunner, "run", refuse)
    folder = assembly[0]
    with pytest.raises(ExportError, match="LiteRT runtime could not run this export .*failed to reshape"):
        _export(assembly, "litert")
    assert not list(folder.glob("*.partial"))


def test_a_converter_failure_names_the_layer_and_the_format(assembly, monkeypatch):
    import tf2onnx

    def fail(*args, **kwargs):
        raise ValueError("Unsupported op in node StatefulPartitionedCall/backbone_1/conv2/convolution")

    monkeypatch.setattr(tf2onnx.convert, "from_function", fail)
    with pytest.raises(ExportError, match="Cannot export to ONNX .*layer 'conv2' in the backbone"):
        _export(assembly, "onnx")


def test_an_op_tf2onnx_cannot_convert_is_named_with_its_layer(tmp_path):
    import keras
    import tensorflow as tf

    class BesselLayer(keras.layers.Layer):
        def call(self, x):
            return tf.math.special.bessel_i1e(x)

    inputs = keras.Input((4,), name="x")
    backbone = keras.Model(inputs, BesselLayer(name="bessel")(keras.layers.Dense(6, name="d")(inputs)))
    heads = [AssemblyHead("t", make_dense_head(2), 1, "0" * 64)]
    build_assembly(backbone=backbone, heads=heads, export_dir=tmp_path / "sm", backbone_info=INFO)
    for fmt in ("onnx", "litert"):
        with pytest.raises(ExportError, match=f"Cannot export to {'ONNX' if fmt == 'onnx' else 'LiteRT'}.*'bessel'"):
            export_assembly(
                backbone=backbone,
                heads=heads,
                trunk=None,
                saved_model_dir=tmp_path / "sm",
                fmt=fmt,
                quantization="none",
                out_path=tmp_path / f"out.{fmt}",
            )


def test_string_inputs_and_bad_requests_are_refused_with_what_to_do(assembly, tmp_path):
    from tests.ml.test_train_text_inputs import make_text_backbone

    backbone = make_text_backbone()
    heads = [AssemblyHead("t", make_dense_head(2), 1, "0" * 64)]
    build_assembly(backbone=backbone, heads=heads, export_dir=tmp_path / "sm", backbone_info=INFO, verify=False)
    with pytest.raises(ExportError, match="input 'text' is a string.*vectorizer's output.*vocabulary"):
        export_assembly(
            backbone=backbone,
            heads=heads,
            trunk=None,
            saved_model_dir=tmp_path / "sm",
            fmt="onnx",
            quantization="none",
            out_path=tmp_path / "x.onnx",
        )
    with pytest.raises(ExportError, match="quantization one of"):
        _export(assembly, "onnx", "int4")
    with pytest.raises(ExportError, match="format one of"):
        _export(assembly, "coreml")


def test_a_two_input_backbone_keeps_its_input_names(tmp_path):
    from tests.ml.test_train_text_inputs import make_two_input_backbone

    backbone = make_two_input_backbone()
    heads = [AssemblyHead(f"t{i}", make_dense_head(3, seed=i), 1, "0" * 64) for i in range(3)]
    rng = np.random.default_rng(0)
    probe = {"token_ids": rng.integers(0, 30, (3, 5)).astype("int32"), "numeric": rng.random((3, 3), "float32")}
    build_assembly(backbone=backbone, heads=heads, export_dir=tmp_path / "sm", backbone_info=INFO, probe_inputs=probe)
    report = export_assembly(
        backbone=backbone,
        heads=heads,
        trunk=None,
        saved_model_dir=tmp_path / "sm",
        fmt="onnx",
        quantization="none",
        out_path=tmp_path / "m.onnx",
        probe_inputs=probe,
    )
    assert report["passed"]
    runner = open_onnx_runner(tmp_path / "m.onnx")
    assert sorted(runner.input_names) == ["numeric", "token_ids"]
    outputs, _ = runner.run(probe, [2, 0, 1])
    features = np.asarray(backbone(probe, training=False))
    for row, task in enumerate([2, 0, 1]):
        np.testing.assert_allclose(outputs[row], np.asarray(heads[task].model(features[row : row + 1]))[0], atol=1e-5)


@pytest.fixture(scope="module")
def branched(tmp_path_factory):
    import keras

    from modelhub.ml.assembly.trunk import AssemblyBranch
    from modelhub.ml.branches import cut_backbone, extract_branch
    from tests.branched_models import BRANCH_POINTS, build_branched_family

    tops = [0, 1, 1, 2]
    folder = tmp_path_factory.mktemp("export_branched")
    family = build_branched_family(tops, size=32, alpha=0.35)
    family.base.save(folder / "base.keras")
    heads = []
    for index, (model, k) in enumerate(zip(family.models, tops, strict=True)):
        head_layer = model.layers[-1]
        features = keras.Input(head_layer.input.shape[1:], name="features")
        head = keras.Model(features, head_layer(features), name=f"head{index}")
        branch = None
        if k:
            model.layers[1].save(folder / f"tuned{index}.keras")
            branch_model, info = extract_branch(folder / f"tuned{index}.keras", BRANCH_POINTS[k], name=f"br{index}")
            branch = AssemblyBranch(info.after_layer, branch_model, hashlib.sha256(b"%d" % index).hexdigest())
        heads.append(AssemblyHead(family.tasks[index], head, 1, "0" * 64, branch=branch))
    trunk = cut_backbone(folder / "base.keras", {h.branch.after_layer for h in heads if h.branch}, include_top=True)
    build_assembly(backbone=family.base, heads=heads, export_dir=folder / "sm", backbone_info=INFO, trunk=trunk)
    return folder, family, heads, trunk


ORT_NOISE = (
    "ONNX Runtime's MobileNetV2 trunk differs from TensorFlow's by 1.3-2.2e-5 on softmax outputs (its conv "
    "kernels sum in another order), above the 1e-5 assembly tolerance, so the export is refused (issue 23)"
)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", [pytest.param("onnx", marks=pytest.mark.xfail(reason=ORT_NOISE)), "litert"])
def test_branched_family_exports_and_matches_the_full_models(branched, fmt):
    folder, family, heads, trunk = branched
    out = folder / f"branched.{fmt}"
    report = export_assembly(
        backbone=family.base,
        heads=heads,
        trunk=trunk,
        saved_model_dir=folder / "sm",
        fmt=fmt,
        quantization="none",
        out_path=out,
        probe_inputs=family.sample_inputs(3),
    )
    assert report["passed"] and any("Branches" in note for note in report["notes"])
    runner = open_onnx_runner(out) if fmt == "onnx" else LiteRunner(out, num_tasks=4, input_names=["inputs"])
    for task_ids in ([3, 0, 1, 2, 1, 0], [0, 0], [2]):  # every path; no branch rows; a branch alone
        task_ids = np.asarray(task_ids, np.int32)
        inputs = family.sample_inputs(len(task_ids), seed=7)
        outputs, _ = runner.run({"inputs": inputs}, task_ids)
        for row, task in enumerate(task_ids.tolist()):
            expected = family.predict(task, inputs[row : row + 1])[0]
            scale = max(1.0, float(np.max(np.abs(expected))))
            # The export is within 1e-5 of the SavedModel (verified), which is within 1e-5 of Keras.
            assert np.max(np.abs(outputs[row, : len(expected)] - expected)) <= 2e-5 * scale, (task_ids, row)
