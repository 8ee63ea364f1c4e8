"""Bounded dataset validation (issue #11): hostile files are refused from their headers.

Every hostile file is built here: an .npz whose x.npy header declares 4 PiB, a lying header, a
pickled object array, a PNG whose header says 20000x20000, zips with too many members or too
much unpacked data. Each is refused with a message naming the limit and its setting, and no
array or image is allocated to find out.
"""

import io
import resource
import struct
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from artifacts.services import blob_store_path
from teams.models import Team
from tests import model_factory as mf
from tests.registry_helpers import upload, wait_status
from training.models import Dataset
from training.work import datasets
from training.work.dataset_zips import DatasetError, load_npz, npz_array_headers, open_dataset_zip
from training.work.image_zips import load_images

PETABYTE_SHAPE = (2**40, 1024)


# --- Hostile files --------------------------------------------------------------------------


def npy_header(shape: tuple[int, ...], dtype="float32") -> bytes:
    """Return a version 1.0 .npy header declaring `shape` and `dtype`, with no data after it."""
    buffer = io.BytesIO()
    descr = np.lib.format.dtype_to_descr(np.dtype(dtype))
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def write_zip(path, members: dict[str, bytes], compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def petabyte_npz(path):
    """The sub-kilobyte upload of the issue: x.npy declares (2**40, 1024) float32 = 4 PiB."""
    return write_zip(path, {"x.npy": npy_header(PETABYTE_SHAPE) + bytes(16), "y.npy": npy_bytes(np.array([0, 1]))})


def png_bytes(width: int = 8, height: int = 8, color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "PNG")
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A small real PNG whose IHDR is patched to declare width x height (CRC recomputed)."""
    data = bytearray(png_bytes())
    struct.pack_into(">II", data, 16, width, height)  # after the signature, IHDR length and type
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def forbid_loading(monkeypatch):
    """Fail the test if anything reads array data or decodes an image."""

    def forbidden(*args, **kwargs):
        raise AssertionError("array or image data was read although a header was over the limit")

    monkeypatch.setattr(np.lib.format, "read_array", forbidden)
    monkeypatch.setattr(np, "load", forbidden)
    monkeypatch.setattr(ImageFile.ImageFile, "load", forbidden)


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


# --- .npz headers ---------------------------------------------------------------------------


def test_petabyte_header_is_refused_from_the_header_alone(tmp_path, monkeypatch):
    path = petabyte_npz(tmp_path / "bomb.npz")
    assert path.stat().st_size < 1024
    forbid_loading(monkeypatch)
    before = peak_rss_bytes()
    with open_dataset_zip(path, fix="") as archive, pytest.raises(DatasetError) as headers_error:
        npz_array_headers(archive)
    with pytest.raises(DatasetError) as load_error:
        load_npz(path)
    assert peak_rss_bytes() - before < 32 * 1024**2
    expected = (
        "x.npy declares shape (1099511627776, 1024) float32 = 4.0 PiB; datasets are limited to 2.0 GiB in "
        "memory (MODELHUB_DATASET_MAX_BYTES_IN_MEMORY). Upload a smaller dataset or raise the limit."
    )
    assert str(headers_error.value) == str(load_error.value) == expected


def test_truthful_array_over_the_limit_is_refused_before_it_is_read(tmp_path, settings):
    settings.MODELHUB_DATASET_MAX_BYTES_IN_MEMORY = 64 * 1024**2
    rows = 512 * 1024**2 // (1024 * 4)  # 512 MiB of float32 zeros, a few hundred KiB compressed
    path = tmp_path / "zeros.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            member.write(npy_header((rows, 1024)))
            for _ in range(32):
                member.write(bytes(16 * 1024**2))
        archive.writestr("y.npy", npy_bytes(np.zeros(rows, dtype="int8")))
    before = peak_rss_bytes()
    with pytest.raises(DatasetError, match=r"512\.0 MiB; datasets are limited to 64\.0 MiB in memory"):
        load_npz(path)
    assert peak_rss_bytes() - before < 32 * 1024**2


def test_arrays_over_the_limit_together_are_refused(tmp_path, settings, monkeypatch):
    settings.MODELHUB_DATASET_MAX_BYTES_IN_MEMORY = 6000
    path = tmp_path / "two.npz"
    np.savez(path, x=np.zeros((100, 10), "float32"), y=np.zeros(100, "int64"), x_val=np.zeros((100, 10), "float32"))
    forbid_loading(monkeypatch)
    with pytest.raises(DatasetError, match=r"The arrays declare 8\.6 KiB together .*MAX_BYTES_IN_MEMORY"):
        load_npz(path)


@pytest.mark.parametrize("declared_rows, data_bytes", [(1000, 16), (2, 4096)])
def test_lying_header_is_refused(tmp_path, monkeypatch, declared_rows, data_bytes):
    path = write_zip(
        tmp_path / "lying.npz",
        {"x.npy": npy_header((declared_rows, 8)) + bytes(data_bytes), "y.npy": npy_bytes(np.zeros(2, "int64"))},
    )
    forbid_loading(monkeypatch)
    with pytest.raises(DatasetError, match=f"x.npy declares shape \\({declared_rows}, 8\\) float32 .* but holds"):
        load_npz(path)


def test_object_arrays_are_refused_from_the_header_without_unpickling(tmp_path, monkeypatch):
    path = write_zip(
        tmp_path / "pickle.npz",
        {"x.npy": npy_bytes(np.array([{"a": 1}], dtype=object)), "y.npy": npy_bytes(np.array([0]))},
    )
    forbid_loading(monkeypatch)
    with pytest.raises(DatasetError, match=r"x.npy holds Python objects .*pickles"):
        load_npz(path)


def test_compressed_and_fortran_order_npz_still_load(tmp_path):
    x = np.asfortranarray(np.random.default_rng(0).standard_normal((40, 6)).astype("float32"))
    y = np.arange(40) % 3
    path = tmp_path / "compressed.npz"
    np.savez_compressed(path, x=x, y=y, labels=np.array(["a", "b", "c"]), notes=np.array([{"ignored": 1}]))
    data = load_npz(path)
    np.testing.assert_array_equal(data["x"], x)
    np.testing.assert_array_equal(data["y"], y)
    assert data["labels"] == ["a", "b", "c"] and "notes" not in data


# --- Zips and images -------------------------------------------------------------------------


def test_too_many_members_are_refused_before_the_directory_is_parsed(tmp_path, settings, monkeypatch):
    settings.MODELHUB_DATASET_MAX_FILES = 5
    path = write_zip(tmp_path / "many.zip", {f"cats/{i}.png": png_bytes() for i in range(6)})
    forbid_loading(monkeypatch)
    monkeypatch.setattr(zipfile.ZipFile, "__init__", lambda *a, **k: pytest.fail("the directory was parsed"))
    message = "The zip holds 6 files; datasets are limited to 5 files (MODELHUB_DATASET_MAX_FILES)."
    with pytest.raises(DatasetError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_images(path)


def test_zip_bomb_is_refused_by_its_unpacked_size(tmp_path, settings, monkeypatch):
    settings.MODELHUB_DATASET_MAX_UNCOMPRESSED_BYTES = 1024**2
    path = write_zip(
        tmp_path / "bomb.zip", {"cats/1.png": png_bytes(), "cats/pad.bin": bytes(4 * 1024**2)}, zipfile.ZIP_DEFLATED
    )
    forbid_loading(monkeypatch)
    with pytest.raises(DatasetError, match=r"unpacks to 4\.0 MiB; .*1\.0 MiB unpacked .*MAX_UNCOMPRESSED_BYTES"):
        load_images(path)


def test_huge_image_is_refused_from_its_header(tmp_path, monkeypatch):
    path = write_zip(tmp_path / "huge.zip", {"cats/big.png": png_declaring(20000, 20000), "dogs/1.png": png_bytes()})
    forbid_loading(monkeypatch)
    pillow_limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(DatasetError) as error:
        load_images(path)
    assert str(error.value) == (
        "Image 'cats/big.png' has 400.0 megapixels; images are limited to 40.0 megapixels each "
        "(MODELHUB_DATASET_MAX_IMAGE_PIXELS). Resize the images or raise the limit."
    )
    assert Image.MAX_IMAGE_PIXELS == pillow_limit


def test_image_between_our_limit_and_pillows_error_is_refused(tmp_path, settings, monkeypatch):
    settings.MODELHUB_DATASET_MAX_IMAGE_PIXELS = 300_000_000  # 400 MP only warns in Pillow at this limit
    path = write_zip(tmp_path / "huge.zip", {"cats/big.png": png_declaring(20000, 20000)})
    forbid_loading(monkeypatch)
    with pytest.raises(DatasetError, match=r"has 400\.0 megapixels; images are limited to 300\.0 megapixels"):
        load_images(path)


def test_total_pixels_are_capped_before_decoding(tmp_path, settings, monkeypatch):
    settings.MODELHUB_DATASET_MAX_TOTAL_PIXELS = 1000
    path = write_zip(tmp_path / "many.zip", {f"cats/{i}.png": png_bytes(20, 20) for i in range(3)})
    forbid_loading(monkeypatch)
    with pytest.raises(
        DatasetError,
        match=r"more than 1,200 pixels together .*limited to 1,000 pixels in all \(MODELHUB_DATASET_MAX_TOTAL_PIXELS\)",
    ):
        load_images(path)


def test_training_load_checks_the_resized_array_against_the_limit(tmp_path, settings):
    path = write_zip(
        tmp_path / "pets.zip",
        {"cats/1.png": png_bytes(30, 20), "cats/2.png": png_bytes(5, 9), "dogs/1.png": png_bytes(color=(0, 0, 255))},
    )
    data = load_images(path, size=(16, 12), channels=3)
    assert data["x"].shape == (3, 16, 12, 3) and data["x"].dtype == np.float32
    assert data["y"].tolist() == [0, 0, 1] and data["labels"] == ["cats", "dogs"]
    np.testing.assert_allclose(data["x"][2, 0, 0], [0.0, 0.0, 1.0])
    settings.MODELHUB_DATASET_MAX_BYTES_IN_MEMORY = 2 * 16 * 12 * 3 * 4
    with pytest.raises(DatasetError, match=r"3 images at 16x12x3 float32 take 6\.8 KiB; .*MAX_BYTES_IN_MEMORY"):
        load_images(path, size=(16, 12), channels=3)


# --- dataset_validate always ends the row ----------------------------------------------------


@pytest.fixture
def validating_dataset(make_member):
    user, _ = make_member("ana")

    def make(path, fmt=Dataset.Format.NPZ) -> Dataset:
        return Dataset.objects.create(
            team=Team.objects.get(slug="vision"),
            name="hostile",
            format=fmt,
            blob=blob_store_path(path=path).blob,
            filename=path.name,
            created_by=user,
        )

    return make


@pytest.mark.django_db
def test_validation_rejects_the_petabyte_npz(tmp_path, validating_dataset):
    dataset = validating_dataset(petabyte_npz(tmp_path / "bomb.npz"))
    datasets.dataset_validate(dataset_id=dataset.pk)
    dataset.refresh_from_db()
    assert dataset.status == Dataset.Status.REJECTED and dataset.finished_at is not None
    assert "4.0 PiB" in dataset.error and "MODELHUB_DATASET_MAX_BYTES_IN_MEMORY" in dataset.error


@pytest.mark.django_db
def test_validation_rejects_the_huge_image(tmp_path, validating_dataset):
    path = write_zip(tmp_path / "huge.zip", {"cats/big.png": png_declaring(20000, 20000), "dogs/1.png": png_bytes()})
    dataset = validating_dataset(path, Dataset.Format.IMAGES)
    datasets.dataset_validate(dataset_id=dataset.pk)
    dataset.refresh_from_db()
    assert dataset.status == Dataset.Status.REJECTED
    assert "MODELHUB_DATASET_MAX_IMAGE_PIXELS" in dataset.error


@pytest.mark.django_db
@pytest.mark.parametrize(
    "raised, expected",
    [(MemoryError(), "ran out of memory validating this dataset"), (RuntimeError("boom"), "RuntimeError: boom")],
)
def test_any_crash_ends_the_row_and_never_escapes(tmp_path, validating_dataset, monkeypatch, raised, expected):
    path = mf.make_classification_npz(tmp_path / "fine.npz", num_rows=20)
    dataset = validating_dataset(path)

    def crash(path):
        raise raised

    monkeypatch.setattr(datasets, "load_npz", crash)
    datasets.dataset_validate(dataset_id=dataset.pk)  # returns: nothing reaches the Celery task
    dataset.refresh_from_db()
    assert dataset.status == Dataset.Status.REJECTED and expected in dataset.error


# --- Through the API with the real worker ----------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_petabyte_upload_is_rejected_and_the_worker_lives_on(api_client_for, celery_worker, tmp_path):
    client = api_client_for("ana")
    response = upload(client, "/api/datasets/", petabyte_npz(tmp_path / "bomb.npz"), team="vision", name="bomb")
    assert response.status_code == 202, response.json()
    body = wait_status(client, f"/api/datasets/{response.json()['id']}/")
    assert body["status"] == "rejected", body
    assert "x.npy declares shape (1099511627776, 1024) float32 = 4.0 PiB" in body["error"]
    assert "MODELHUB_DATASET_MAX_BYTES_IN_MEMORY" in body["error"]
    assert celery_worker.poll() is None, "the worker process exited"

    path = mf.make_classification_npz(tmp_path / "fine.npz", num_rows=40)
    response = upload(client, "/api/datasets/", path, team="vision", name="fine")
    body = wait_status(client, f"/api/datasets/{response.json()['id']}/")
    assert body["status"] == "ready", body
    assert celery_worker.poll() is None
