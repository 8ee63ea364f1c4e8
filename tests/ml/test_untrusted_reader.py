"""The untrusted-file reader refuses every hostile file of the generated corpus, before using its bytes.

Each kind is refused by the worker's check (``check_keras_archive``) and by the web process'
compare (``compare_head_weights``), with a message that says what was found; the canary's secret
never shows up in a message; and the process' peak memory stays small although some files
declare gigabytes.
"""

import io
import json
import zipfile

import numpy as np
import pytest

from modelhub.ml.compare import compare_head_weights
from modelhub.ml.errors import InvalidModelFileError, MLError
from modelhub.ml.safe_load import check_keras_archive, load_keras_model
from modelhub.ml.untrusted import Limits, UntrustedKerasFile, json_nesting_depth
from tests import hostile_files, process_memory

# Limits as the test worker runs with them (tests/conftest.py), plus the corpus' small dataset count.
LIMITS = {"max_uncompressed_bytes": 256 * 1024**2, **hostile_files.TINY_LIMITS}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    canary, secret = hostile_files.make_canary(root)
    return root, secret, hostile_files.build_corpus(root / "files", canary)


def test_the_corpus_has_at_least_twenty_kinds_and_the_honest_head_passes(corpus):
    root, _, files = corpus
    assert len(files) >= 20, sorted(files)
    honest = root / "files" / "honest.keras"
    info = check_keras_archive(honest, **LIMITS)
    assert info["num_weight_arrays"] == 2 and info["declared_weight_bytes"] == (6 * 3 + 3) * 4
    assert load_keras_model(honest).count_params() == 21
    assert compare_head_weights(honest, honest)["relative_l2_change"] == 0.0


def test_every_hostile_file_is_refused_by_the_check_and_by_compare_with_its_reason(corpus):
    root, secret, files = corpus
    honest = root / "files" / "honest.keras"
    refused = {}
    for kind, item in files.items():
        with pytest.raises(InvalidModelFileError) as checked:
            check_keras_archive(item.path, **LIMITS)
        with pytest.raises(MLError) as compared:
            compare_head_weights(honest, item.path, **LIMITS)
        for message in (str(checked.value), str(compared.value)):
            assert item.expected.lower() in message.lower(), (kind, message)
            assert secret.decode() not in message, kind
        refused[kind] = str(checked.value)
    assert set(refused) == set(files)


def test_peak_memory_stays_bounded_while_files_declare_gigabytes(corpus):
    _, _, files = corpus
    baseline = process_memory.reset_peak()
    for item in files.values():
        with pytest.raises(InvalidModelFileError):
            check_keras_archive(item.path, **LIMITS)
    grown = process_memory.peak_rss() - baseline
    # declared_size_bomb alone declares 2 GiB and chunked_gzip_bomb 4 GiB; config_50mb unpacks 50 MB.
    assert grown < 160 * 1024**2, f"peak RSS grew by {grown / 1024**2:.0f} MiB"


def test_reader_reads_nothing_before_the_structure_is_checked(corpus, monkeypatch):
    """Opening a hostile file never reaches dataset reads: the refusal comes from the structure walk."""
    _, _, files = corpus
    import h5py

    def no_reads(*args, **kwargs):
        raise AssertionError("a dataset was read before the file was refused")

    monkeypatch.setattr(h5py.Dataset, "__getitem__", no_reads)
    monkeypatch.setattr(h5py.Dataset, "read_direct", no_reads)
    for kind in ("external_storage", "virtual_dataset", "declared_size_bomb", "chunked_gzip_bomb", "soft_link"):
        with pytest.raises(InvalidModelFileError):
            UntrustedKerasFile(files[kind].path, limits=Limits.from_kwargs(**LIMITS))


def test_declared_total_and_counts_have_their_own_limits(corpus):
    root, _, _ = corpus
    honest = root / "files" / "honest.keras"
    with pytest.raises(InvalidModelFileError, match="declare at most 40 bytes"):
        check_keras_archive(honest, max_declared_bytes=40)
    with pytest.raises(InvalidModelFileError, match="at most 1 weight arrays"):
        check_keras_archive(honest, max_datasets=1)
    with pytest.raises(InvalidModelFileError, match="at most 1 layers"):
        check_keras_archive(honest, max_layers=1)
    with pytest.raises(TypeError, match="Unknown limits"):
        check_keras_archive(honest, max_everything=1)


@pytest.mark.parametrize(
    "raw",
    [b"{}", b'{"a": [1, {"b": "[[[["}]}', b'["\\"[", [[]]]', b"[" * 50 + b"]" * 50, b'"x"'],
)
def test_json_nesting_depth_matches_the_parsed_depth(raw):
    def depth(value) -> int:
        if isinstance(value, dict):
            return 1 + max((depth(item) for item in value.values()), default=0)
        if isinstance(value, list):
            return 1 + max((depth(item) for item in value), default=0)
        return 0

    assert json_nesting_depth(raw) == depth(json.loads(raw))


def test_a_config_of_escaped_quotes_is_refused_in_linear_time(corpus):
    """16 MiB of ``"\\"\\"…`` never closes its string: the depth scan is linear (it took days)."""
    import time

    _, _, files = corpus
    started = time.monotonic()
    with pytest.raises(InvalidModelFileError, match="to be JSON"):
        check_keras_archive(files["config_quote_run"].path, **LIMITS)
    assert time.monotonic() - started < 5
    raw = b'["' + (b'\\"' * 1024 + b"\\\n") * 8192  # with escaped line ends too (16 MiB)
    started = time.monotonic()
    assert json_nesting_depth(raw) == 1  # one string runs to the end, whatever it holds
    assert time.monotonic() - started < 5


def test_dataset_zips_get_the_same_zip_checks(tmp_path, settings):
    from training.work.dataset_zips import DatasetError, open_dataset_zip

    symlinked = tmp_path / "symlink.npz"
    with zipfile.ZipFile(symlinked, "w") as archive:
        info = zipfile.ZipInfo("x.npy")
        info.external_attr = (0o120777) << 16
        archive.writestr(info, "/etc/passwd")
    with pytest.raises(DatasetError, match="symbolic link"):
        open_dataset_zip(symlinked, fix="")
    doubled = tmp_path / "doubled.npz"
    with zipfile.ZipFile(doubled, "w") as archive:
        for _ in range(2):
            archive.writestr("x.npy", np.lib.format.header_data_from_array_1_0(np.zeros(1)).__repr__())
    with pytest.raises(DatasetError, match="twice"):
        open_dataset_zip(doubled, fix="")


@pytest.mark.parametrize("order", ["C", "F"])
def test_read_npy_round_trips_and_refuses_headers_that_do_not_match_the_data(order):
    from modelhub.ml.errors import InvalidDatasetError
    from modelhub.ml.untrusted.npy import read_npy_bytes

    expected = np.asarray(np.arange(12, dtype="float32").reshape(3, 4), order=order)
    buffer = io.BytesIO()
    np.save(buffer, expected)
    np.testing.assert_array_equal(read_npy_bytes(buffer.getvalue(), max_bytes=1024), expected)
    with pytest.raises(InvalidDatasetError, match="holds 40"):
        read_npy_bytes(buffer.getvalue()[:-8], max_bytes=1024)
    with pytest.raises(InvalidDatasetError, match="at most 16 bytes"):
        read_npy_bytes(buffer.getvalue(), max_bytes=16)
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidDatasetError, match="never loaded"):
        read_npy_bytes(pickled.getvalue(), max_bytes=1024)


def test_a_trained_model_keeps_its_optimizer_state_and_passes(tmp_path):
    """Keras writes optimizer/ and model-level vars/ beside layers/ for a compiled, trained model."""
    import keras

    inputs = keras.Input((4,), name="x")
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.BatchNormalization()(inputs))
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(np.random.rand(8, 4), np.random.randint(0, 3, 8), epochs=1, verbose=0)
    path = tmp_path / "trained.keras"
    model.save(path)
    with UntrustedKerasFile(path) as file:
        assert any(name.startswith("optimizer/") for name in file.datasets)
    assert check_keras_archive(path)["num_weight_arrays"] == len(model.weights) + len(model.optimizer.variables)
    assert compare_head_weights(path, path)["relative_l2_change"] == 0.0
