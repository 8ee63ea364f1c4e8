"""Safe loading: zip checks, Lambda/custom-object refusal, SavedModel refusal."""

from __future__ import annotations

import json
import zipfile

import keras
import numpy as np
import pytest

from modelhub.ml import safe_load
from modelhub.ml.errors import InvalidModelFileError, UnsafeModelError
from tests.ml.conftest import image_batch

LAMBDA_RAN = {"flag": False}


def _mark_and_double(x):
    LAMBDA_RAN["flag"] = True
    with open(_mark_and_double.marker, "w") as handle:  # type: ignore[attr-defined]
        handle.write("ran")
    return x * 2


def _write_zip(path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def test_round_trip_loads_equal_model(tmp_path, backbone, images):
    path = tmp_path / "backbone.keras"
    backbone.save(path)
    info = safe_load.check_keras_archive(path)
    assert info["class_name"] == "Functional" and info["num_members"] >= 2
    loaded = safe_load.load_keras_model(path)
    np.testing.assert_array_equal(np.asarray(loaded(images)), np.asarray(backbone(images)))


def test_blob_without_keras_suffix_loads(tmp_path, backbone):
    path = tmp_path / "backbone.keras"
    backbone.save(path)
    blob = tmp_path / "3f2a9c"
    blob.write_bytes(path.read_bytes())
    assert safe_load.load_keras_model(blob).count_params() == backbone.count_params()


def test_lambda_layer_refused_without_running_code(tmp_path):
    marker = tmp_path / "marker.txt"
    _mark_and_double.marker = str(marker)  # type: ignore[attr-defined]
    inputs = keras.Input((3,), name="x")
    model = keras.Model(inputs, keras.layers.Lambda(_mark_and_double, name="evil")(inputs))
    path = tmp_path / "lambda.keras"
    model.save(path)
    LAMBDA_RAN["flag"] = False
    marker.unlink()
    with pytest.raises(UnsafeModelError, match="Lambda layer.*evil"):
        safe_load.load_keras_model(path)
    assert not marker.exists()
    assert LAMBDA_RAN["flag"] is False


def test_custom_object_refused(tmp_path, backbone):
    path = tmp_path / "m.keras"
    backbone.save(path)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    config["config"]["layers"][1]["module"] = "evil_package.layers"
    config["config"]["layers"][1]["registered_name"] = "Evil>Conv"
    members["config.json"] = json.dumps(config).encode()
    bad = tmp_path / "custom.keras"
    _write_zip(bad, members)
    with pytest.raises(UnsafeModelError, match="evil_package.layers"):
        safe_load.load_keras_model(bad)


def test_saved_model_directory_refused(tmp_path):
    directory = tmp_path / "exported"
    directory.mkdir()
    (directory / "saved_model.pb").write_bytes(b"\x00")
    with pytest.raises(UnsafeModelError, match=r'model.save\("x.keras"\)'):
        safe_load.check_keras_archive(directory)
    with pytest.raises(UnsafeModelError, match="SavedModel"):
        safe_load.check_keras_archive(directory / "saved_model.pb")
    zipped = tmp_path / "sm.keras"
    _write_zip(zipped, {"m/saved_model.pb": b"x", "config.json": b"{}"})
    with pytest.raises(UnsafeModelError, match="SavedModel"):
        safe_load.check_keras_archive(zipped)


@pytest.mark.parametrize("member", ["/etc/passwd", "../escape.json", "a/../../b"])
def test_unsafe_member_paths_refused(tmp_path, member):
    path = tmp_path / "paths.keras"
    _write_zip(path, {"config.json": b'{"class_name": "Functional"}', member: b"x"})
    with pytest.raises(UnsafeModelError, match="absolute|escapes"):
        safe_load.check_keras_archive(path)


def test_limits_refused(tmp_path):
    path = tmp_path / "bomb.keras"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", b'{"class_name": "Functional"}')
        archive.writestr("zeros.bin", b"\x00" * 5_000_000)
    assert path.stat().st_size < 100_000
    with pytest.raises(InvalidModelFileError, match="zip bomb"):
        safe_load.check_keras_archive(path, max_uncompressed_bytes=1_000_000)
    with pytest.raises(InvalidModelFileError, match="at most 1 members"):
        safe_load.check_keras_archive(path, max_members=1)
    with pytest.raises(InvalidModelFileError, match="at most 100 bytes"):
        safe_load.check_keras_archive(path, max_bytes=100)


def test_not_a_zip_and_missing_config(tmp_path):
    h5 = tmp_path / "model.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 10)
    with pytest.raises(InvalidModelFileError, match="HDF5"):
        safe_load.check_keras_archive(h5)
    no_config = tmp_path / "empty.keras"
    _write_zip(no_config, {"model.weights.h5": b"x"})
    with pytest.raises(InvalidModelFileError, match="config.json"):
        safe_load.check_keras_archive(no_config)


def test_keras_errors_mapped(tmp_path):
    broken = tmp_path / "broken.keras"
    _write_zip(
        broken,
        {
            "config.json": json.dumps({"module": "keras.layers", "class_name": "NoSuchLayer", "config": {}}).encode(),
            "metadata.json": b"{}",
        },
    )
    with pytest.raises(InvalidModelFileError):
        safe_load.load_keras_model(broken)


def test_loaded_model_runs(tmp_path, backbone):
    path = tmp_path / "b.keras"
    backbone.save(path)
    assert safe_load.load_keras_model(path)(image_batch(2)).shape == (2, 6)
