"""Datasets through the API with a real worker: validation, statistics, and refused files."""

import numpy as np
import pytest

from artifacts.models import Blob
from tests import model_factory as mf
from tests.registry_helpers import upload, wait_status
from training.models import Dataset

pytestmark = pytest.mark.django_db(transaction=True)


def post_dataset(client, path, name="digits"):
    return upload(client, "/api/datasets/", path, team="vision", name=name)


def test_npz_dataset_is_described(api_client_for, celery_worker, tmp_path):
    client = api_client_for("ana")
    path = mf.make_classification_npz(tmp_path / "d.npz", num_rows=200)
    response = post_dataset(client, path)
    assert response.status_code == 202
    body = wait_status(client, f"/api/datasets/{response.json()['id']}/")
    assert body["status"] == "ready", body
    y = np.load(path)["y"]
    assert (body["num_examples"], body["num_validation"], body["input_shape"]) == (150, 50, [8])
    assert body["num_classes"] == 3 and body["labels"] == ["class_0", "class_1", "class_2"]
    assert body["class_histogram"] == {str(k): int(v) for k, v in zip(*np.unique(y, return_counts=True), strict=True)}


def test_image_zip_dataset_gets_classes_from_folders(api_client_for, celery_worker, tmp_path):
    import zipfile

    from PIL import Image

    client = api_client_for("ana")
    path = tmp_path / "images.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for label, color in (("cats", (255, 0, 0)), ("dogs", (0, 0, 255))):
            for index in range(3):
                image_path = tmp_path / f"{label}{index}.png"
                Image.new("RGB", (10 + index, 12), color).save(image_path)
                archive.write(image_path, f"{label}/{index}.png")
    body = wait_status(client, f"/api/datasets/{post_dataset(client, path, 'pets').json()['id']}/")
    assert body["status"] == "ready", body
    assert (body["num_examples"], body["num_classes"], body["labels"]) == (6, 2, ["cats", "dogs"])
    assert body["class_histogram"] == {"0": 3, "1": 3}


@pytest.mark.parametrize(
    "arrays, expected",
    [
        ({"x": np.array([[np.nan] * 8], dtype="float32"), "y": np.array([0])}, "NaN or Inf"),
        ({"x": np.zeros((0, 8), dtype="float32"), "y": np.zeros((0,), dtype="int64")}, "empty"),
        ({"x": np.zeros((3, 8), dtype="float32"), "y": np.array([0, 1])}, "3 rows but y has 2"),
        ({"x": np.array([{"a": 1}], dtype=object), "y": np.array([0])}, "pickles"),
        ({"inputs": np.zeros((3, 8))}, "must hold arrays 'x' and 'y'"),
    ],
)
def test_bad_datasets_are_rejected_with_the_reason(api_client_for, celery_worker, tmp_path, arrays, expected):
    client = api_client_for("ana")
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    body = wait_status(client, f"/api/datasets/{post_dataset(client, path).json()['id']}/")
    assert body["status"] == "rejected"
    assert expected in body["error"]


def test_wrong_extension_is_400_and_stores_nothing(api_client_for, tmp_path):
    client = api_client_for("ana")
    path = tmp_path / "data.txt"
    path.write_text("a,b\n1,2\n")
    response = post_dataset(client, path)
    message = response.json()["error"]["message"]
    assert response.status_code == 400 and ".npz" in message and ".csv" in message and "data.txt" in message
    assert Dataset.objects.count() == 0 and Blob.objects.count() == 0
