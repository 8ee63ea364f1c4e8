"""Assembled SavedModel: contract, equivalence, both loaders, bad task ids, determinism."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from modelhub.ml.assembly.build import build_assembly, variables_sha256
from modelhub.ml.assembly.manifest import AssemblyHead
from modelhub.ml.assembly.verify import verify_assembly
from modelhub.ml.errors import AssemblyError, AssemblyVerificationError
from modelhub.ml.inspect import weights_fingerprint
from tests.ml.conftest import (
    image_batch,
    make_backbone,
    make_branchy_head,
    make_dense_head,
    make_mlp_head,
)

VENV_BIN = Path(sys.executable).parent


def _heads() -> list[AssemblyHead]:
    return [
        AssemblyHead("sentiment", make_dense_head(3, seed=11), 1, "a" * 64, ["neg", "neu", "pos"]),
        AssemblyHead("topic", make_dense_head(3, seed=12), 2, "b" * 64, ["x", "y", "z"]),
        AssemblyHead("box-head", make_dense_head(4, activation="linear", seed=13), 1, "c" * 64),
        AssemblyHead("mlp", make_mlp_head(5, seed=14), 1, "d" * 64),
        AssemblyHead("mlp-2", make_mlp_head(5, seed=15), 3, "e" * 64),
        AssemblyHead("branchy", make_branchy_head(seed=16), 1, "f" * 64),
    ]


@pytest.fixture(scope="module")
def assembly(tmp_path_factory):
    backbone = make_backbone()
    heads = _heads()
    export_dir = tmp_path_factory.mktemp("asm") / "assembly"
    info = {"name": "tiny", "version": 2, "sha256": weights_fingerprint(backbone)}
    result = build_assembly(backbone=backbone, heads=heads, export_dir=export_dir, backbone_info=info)
    return {"backbone": backbone, "heads": heads, "dir": export_dir, "result": result, "info": info}


def _expected(backbone, head, images):
    # Independent computation: the Keras components, eager.
    return np.asarray(head.model(backbone(images, training=False), training=False))


def test_manifest(assembly):
    manifest = json.loads((assembly["dir"] / "assets" / "manifest.json").read_text())
    assert manifest == assembly["result"]["manifest"]
    assert manifest["format_version"] == 1
    assert manifest["backbone"]["sha256"] == assembly["info"]["sha256"]
    assert manifest["backbone"]["input"] == {"name": "inputs", "shape": [None, 8, 8, 3], "dtype": "float32"}
    assert manifest["serving"]["max_width"] == 5
    assert [(h["task_id"], h["task"], h["version"], h["output_width"]) for h in manifest["heads"]] == [
        (0, "sentiment", 1, 3),
        (1, "topic", 2, 3),
        (2, "box-head", 1, 4),
        (3, "mlp", 1, 5),
        (4, "mlp-2", 3, 5),
        (5, "branchy", 1, 3),
    ]
    assert manifest["heads"][0]["labels"] == ["neg", "neu", "pos"]
    assert manifest["heads"][0]["sha256"] == "a" * 64
    assert assembly["result"]["verification"]["max_abs_diff"] <= 1e-5


def test_mixed_batch_matches_components(assembly):
    loaded = tf.saved_model.load(str(assembly["dir"]))
    serving = loaded.signatures["serving_default"]
    images = image_batch(12, seed=7)
    task_ids = np.array([5, 0, 3, 3, 1, 2, 4, 0, 5, 2, 1, 4], np.int32)
    result = serving(inputs=tf.constant(images), task_id=tf.constant(task_ids))
    outputs, widths = result["outputs"].numpy(), result["output_width"].numpy()
    assert outputs.shape == (12, 5) and outputs.dtype == np.float32
    for row, task in enumerate(task_ids):
        head = assembly["heads"][task]
        expected = _expected(assembly["backbone"], head, images[row : row + 1])[0]
        width = expected.shape[0]
        assert widths[row] == width
        np.testing.assert_allclose(outputs[row, :width], expected, atol=1e-5, rtol=0)
        assert np.all(outputs[row, width:] == 0)


def test_an_empty_batch_gives_no_rows(assembly):
    """TensorFlow's CPU kernels fail on Conv2D + BatchNormalization with zero rows; the assembly does not."""
    serving = tf.saved_model.load(str(assembly["dir"])).signatures["serving_default"]
    result = serving(inputs=tf.zeros([0, 8, 8, 3]), task_id=tf.zeros([0], tf.int32))
    assert result["outputs"].shape == (0, 5) and result["output_width"].shape == (0,)


def test_wide_batch_takes_grouped_path(assembly, monkeypatch):
    """Above the per-row gather budget the rows are grouped by task; results are the same."""
    import modelhub.ml.assembly.head_stage as head_stage_module

    monkeypatch.setattr(head_stage_module, "PER_ROW_GATHER_MAX_FLOATS", 0)
    heads = assembly["heads"][:5]
    export_dir = assembly["dir"].parent / "grouped"
    result = build_assembly(
        backbone=assembly["backbone"], heads=heads, export_dir=export_dir, backbone_info=assembly["info"]
    )
    assert result["verification"]["max_abs_diff"] <= 1e-5
    # Not only the build's own figure: every row served by the grouped path against Keras, eager.
    serving = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    images = image_batch(10, seed=21)
    task_ids = np.array([4, 0, 2, 2, 1, 3, 0, 4, 1, 3], np.int32)
    outputs = serving(inputs=tf.constant(images), task_id=tf.constant(task_ids))["outputs"].numpy()
    for row, task in enumerate(task_ids):
        expected = _expected(assembly["backbone"], heads[task], images[row : row + 1])[0]
        np.testing.assert_allclose(outputs[row, : expected.shape[0]], expected, atol=1e-5, rtol=0)
        assert np.all(outputs[row, expected.shape[0] :] == 0)


def test_per_task_signatures_are_opt_in(assembly, tmp_path):
    loaded = tf.saved_model.load(str(assembly["dir"]))
    assert set(loaded.signatures) == {"serving_default", "serving_by_task"}
    assert assembly["result"]["manifest"]["serving"]["per_head_signatures"] is False
    heads = assembly["heads"][:4]
    result = build_assembly(
        backbone=assembly["backbone"],
        heads=heads,
        export_dir=tmp_path / "signatures",
        backbone_info=assembly["info"],
        per_head_signatures=True,
    )
    assert result["manifest"]["serving"]["per_head_signatures"] is True
    assert "4 per-task signatures" in result["verification"]["checked"]
    loaded = tf.saved_model.load(str(tmp_path / "signatures"))
    assert set(loaded.signatures) == {"serving_default", "serving_by_task", *(h.task for h in heads)}
    images = image_batch(3, seed=8)
    for head in heads:
        outputs = loaded.signatures[head.task](inputs=tf.constant(images))["outputs"].numpy()
        np.testing.assert_allclose(outputs, _expected(assembly["backbone"], head, images), atol=1e-5, rtol=0)


def test_serving_by_task_matches_serving_default(assembly):
    loaded = tf.saved_model.load(str(assembly["dir"]))
    images = tf.constant(image_batch(6, seed=9))
    slugs = ["branchy", "sentiment", "mlp", "mlp", "box-head", "topic"]
    by_task = loaded.signatures["serving_by_task"](inputs=images, task=tf.constant(slugs))
    ids = [[h.task for h in assembly["heads"]].index(slug) for slug in slugs]
    by_id = loaded.signatures["serving_default"](inputs=images, task_id=tf.constant(ids, tf.int32))
    np.testing.assert_array_equal(by_task["outputs"].numpy(), by_id["outputs"].numpy())
    np.testing.assert_array_equal(by_task["output_width"].numpy(), by_id["output_width"].numpy())
    for row, task_id in enumerate(ids):
        head = assembly["heads"][task_id]
        expected = _expected(assembly["backbone"], head, image_batch(6, seed=9)[row : row + 1])[0]
        np.testing.assert_allclose(by_task["outputs"].numpy()[row, : expected.shape[0]], expected, atol=1e-5)


def test_serving_by_task_names_an_unknown_slug(assembly):
    loaded = tf.saved_model.load(str(assembly["dir"]))
    images = tf.constant(image_batch(2))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"unknown task slug.*no-such-task"):
        loaded.signatures["serving_by_task"](inputs=images, task=tf.constant(["topic", "no-such-task"]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="one entry per input row"):
        loaded.signatures["serving_by_task"](inputs=images, task=tf.constant(["topic"]))


def test_bad_task_id_raises(assembly):
    loaded = tf.saved_model.load(str(assembly["dir"]))
    serving = loaded.signatures["serving_default"]
    images = image_batch(2)
    for bad in ([0, 6], [-1, 0]):
        with pytest.raises(tf.errors.InvalidArgumentError, match="task_id out of range"):
            serving(inputs=tf.constant(images), task_id=tf.constant(bad, tf.int32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="one entry per input row"):
        serving(inputs=tf.constant(images), task_id=tf.constant([0], tf.int32))


def test_variables_stored_once(assembly):
    reader = tf.train.load_checkpoint(str(assembly["dir"] / "variables" / "variables"))
    shapes = reader.get_variable_to_shape_map()
    stored = sum(int(np.prod(shape)) for name, shape in shapes.items() if "VARIABLE_VALUE" in name)
    backbone_params = assembly["backbone"].count_params()
    head_params = sum(head.model.count_params() for head in assembly["heads"])
    assert stored == backbone_params + head_params
    # Same-architecture heads are stacked: [2, 6, 3] holds sentiment + topic.
    assert any(list(shape) == [2, 6, 3] for shape in shapes.values())


def test_fresh_process_load_imports_only_tensorflow(assembly, tmp_path):
    images = image_batch(2, seed=3)
    np.save(tmp_path / "images.npy", images)
    script = textwrap.dedent(
        f"""
        import sys, json
        import numpy as np
        import tensorflow as tf
        before = set(sys.modules)
        loaded = tf.saved_model.load({str(assembly["dir"])!r})
        out = loaded.signatures["serving_default"](
            inputs=tf.constant(np.load({str(tmp_path / "images.npy")!r})),
            task_id=tf.constant([3, 0], tf.int32))
        by_task = loaded.signatures["serving_by_task"](
            inputs=tf.constant(np.load({str(tmp_path / "images.npy")!r})),
            task=tf.constant(["mlp", "sentiment"]))
        try:
            loaded.signatures["serving_by_task"](
                inputs=tf.constant(np.load({str(tmp_path / "images.npy")!r})), task=tf.constant(["mlp", "nope"]))
            unknown = "no error"
        except tf.errors.InvalidArgumentError as error:
            unknown = error.message
        # `import tensorflow` itself pulls in keras.src; loading must not add Keras model code.
        banned = [m for m in sys.modules if m.startswith(("modelhub", "django"))]
        banned += [m for m in set(sys.modules) - before if "keras" in m]
        print(json.dumps({{"outputs": out["outputs"].numpy().tolist(), "banned": banned,
                           "by_task": by_task["outputs"].numpy().tolist(), "unknown": unknown}}))
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300, check=True
    )
    payload = json.loads(proc.stdout.strip().splitlines()[-1])
    assert payload["banned"] == []
    outputs = np.array(payload["outputs"], np.float32)
    backbone, heads = assembly["backbone"], assembly["heads"]
    np.testing.assert_allclose(outputs[0, :5], _expected(backbone, heads[3], images[:1])[0], atol=1e-5)
    np.testing.assert_allclose(outputs[1, :3], _expected(backbone, heads[0], images[1:])[0], atol=1e-5)
    np.testing.assert_array_equal(np.array(payload["by_task"], np.float32), outputs)
    assert "unknown task slug" in payload["unknown"] and "nope" in payload["unknown"]


def _saved_model_cli(export_dir: Path, signature: str, inputs: str, out_dir: Path) -> subprocess.CompletedProcess:
    cli = VENV_BIN / "saved_model_cli"
    if not cli.exists():
        pytest.fail(f"saved_model_cli not found next to {sys.executable}")
    command = [str(cli), "run", "--dir", str(export_dir), "--tag_set", "serve", "--signature_def", signature]
    command += ["--inputs", inputs, "--outdir", str(out_dir)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_saved_model_cli_run(assembly, tmp_path):
    images = image_batch(2, seed=4)
    npz = tmp_path / "in.npz"
    np.savez(npz, x=images, t=np.array([2, 1], np.int32), s=np.array([b"box-head", b"topic"]))
    proc = _saved_model_cli(assembly["dir"], "serving_default", f"inputs={npz}[x];task_id={npz}[t]", tmp_path / "a")
    assert proc.returncode == 0, proc.stderr[-2000:]
    outputs = np.load(tmp_path / "a" / "outputs.npy")
    widths = np.load(tmp_path / "a" / "output_width.npy")
    backbone, heads = assembly["backbone"], assembly["heads"]
    assert widths.tolist() == [4, 3]
    np.testing.assert_allclose(outputs[0, :4], _expected(backbone, heads[2], images[:1])[0], atol=1e-5)
    np.testing.assert_allclose(outputs[1, :3], _expected(backbone, heads[1], images[1:])[0], atol=1e-5)

    proc = _saved_model_cli(assembly["dir"], "serving_by_task", f"inputs={npz}[x];task={npz}[s]", tmp_path / "b")
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_array_equal(np.load(tmp_path / "b" / "outputs.npy"), outputs)

    np.savez(npz, x=images, s=np.array([b"box-head", b"not-a-task"]))
    proc = _saved_model_cli(assembly["dir"], "serving_by_task", f"inputs={npz}[x];task={npz}[s]", tmp_path / "c")
    assert proc.returncode != 0
    assert "unknown task slug" in proc.stderr and "not-a-task" in proc.stderr
    assert not (tmp_path / "c" / "outputs.npy").exists()


def test_build_is_deterministic(tmp_path):
    backbone = make_backbone()
    info = {"name": "tiny", "version": 1, "sha256": "0" * 64}
    first = build_assembly(
        backbone=backbone, heads=_heads()[:3], export_dir=tmp_path / "one", backbone_info=info, verify=False
    )
    second = build_assembly(
        backbone=backbone, heads=_heads()[:3], export_dir=tmp_path / "two", backbone_info=info, verify=False
    )
    assert (tmp_path / "one/assets/manifest.json").read_bytes() == (tmp_path / "two/assets/manifest.json").read_bytes()
    assert first["manifest"] == second["manifest"]
    assert variables_sha256(tmp_path / "one") == variables_sha256(tmp_path / "two")
    assert (tmp_path / "one/variables/variables.data-00000-of-00001").read_bytes() == (
        tmp_path / "two/variables/variables.data-00000-of-00001"
    ).read_bytes()


def test_verification_catches_wrong_head(assembly, tmp_path):
    heads = [head.model for head in assembly["heads"]]
    heads[1] = make_dense_head(3, seed=99)
    with pytest.raises(AssemblyVerificationError, match="'topic'"):
        verify_assembly(assembly["dir"], assembly["backbone"], heads)


def test_bad_heads_refused(tmp_path):
    backbone = make_backbone()
    info = {"name": "tiny", "version": 1, "sha256": "0" * 64}
    wrong = AssemblyHead("wrong", make_dense_head(3, num_features=7), 1, "0" * 64)
    with pytest.raises(AssemblyError, match=r"expects features of shape \[7\].*outputs \[6\]"):
        build_assembly(backbone=backbone, heads=[wrong], export_dir=tmp_path / "a", backbone_info=info)
    same = AssemblyHead("dup", make_dense_head(3), 1, "0" * 64)
    with pytest.raises(AssemblyError, match="twice"):
        build_assembly(backbone=backbone, heads=[same, same], export_dir=tmp_path / "b", backbone_info=info)
    with pytest.raises(AssemblyError, match="at least one head"):
        build_assembly(backbone=backbone, heads=[], export_dir=tmp_path / "c", backbone_info=info)
