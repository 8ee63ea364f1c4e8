"""Helpers for job tests: a ready backbone and datasets, posting jobs, waiting for them."""

from tests import model_factory as mf
from tests.registry_helpers import assert_job_succeeded, ready_backbone, upload, wait_status

JOB_PENDING = ("queued", "running")


def ready_dataset(client, path, name="data") -> dict:
    body = wait_status(
        client, f"/api/datasets/{upload(client, '/api/datasets/', path, team='vision', name=name).json()['id']}/"
    )
    assert body["status"] == "ready", body
    return body


def setup_backbone_and_data(client, model_files, tmp_path, **dataset_kwargs) -> tuple[dict, dict]:
    backbone = ready_backbone(client, model_files["backbone"])
    dataset = ready_dataset(client, mf.make_classification_npz(tmp_path / "train.npz", **dataset_kwargs))
    return backbone, dataset


def post_job(client, kind: str, **params) -> dict:
    response = client.post("/api/jobs/", {"team": "vision", "kind": kind, **params}, format="json")
    assert response.status_code == 202, response.json()
    return response.json()


def finished_job(client, job_id: int, timeout: float = 180) -> dict:
    return wait_status(client, f"/api/jobs/{job_id}/", pending=JOB_PENDING, timeout=timeout)


def approved_trained_head(author, reviewer, *, backbone: int, dataset: int, task: str, **params) -> int:
    """Train a dense head with a job, submit it as `author`, approve it as `reviewer`; return its id."""
    job = finished_job(
        author,
        post_job(author, "train_head", backbone=backbone, dataset=dataset, task=task, head={"type": "dense"}, **params)[
            "id"
        ],
    )
    assert_job_succeeded(job)
    head_id = job["result"]["head_versions"][0]
    assert author.post(f"/api/heads/{head_id}/submit/").status_code == 200
    assert reviewer.post(f"/api/heads/{head_id}/approve/").status_code == 200
    return head_id


# --- In-process rows (no worker): real tiny models and datasets, stored as the worker would -----


def backbone_version_row(user, tmp_path, *, team: str = "vision", name: str = "tiny", seed: int = 0):
    """A ready backbone version holding the tiny backbone (tests/model_factory.py), described."""
    from artifacts.services import blob_store_path
    from backbones.services import backbone_version_create
    from modelhub.ml.inspect import inspect_model
    from teams.models import Team

    model = mf.make_backbone(seed=seed)
    spec = inspect_model(model)
    blob = blob_store_path(path=mf.save(model, tmp_path / f"{name}-{seed}.keras")).blob
    return backbone_version_create(
        team=Team.objects.get(slug=team), user=user, name=name, blob=blob, filename=f"{name}.keras",
        status="ready", spec=spec, weights_sha256=spec["weights_sha256"],
    )  # fmt: skip


def dataset_row_from_file(user, path, *, team: str = "vision", name: str = "data"):
    """A dataset stored from `path` and validated in-process by the real validator (ready or rejected)."""
    from artifacts.services import blob_store_path
    from teams.models import Team
    from training.models import Dataset
    from training.work.datasets import dataset_validate

    dataset = Dataset.objects.create(
        team=Team.objects.get(slug=team), name=name, format=Dataset.Format.NPZ,
        blob=blob_store_path(path=path).blob, filename=path.name, created_by=user,
    )  # fmt: skip
    dataset_validate(dataset_id=dataset.pk)
    dataset.refresh_from_db()
    return dataset


def dataset_row(user, *, team="vision", name="data", input_shape=(8,), status=None, fmt="npz", **fields):
    """A dataset row as the worker leaves it after validation (ready unless `status` says otherwise); no file."""
    from artifacts.services import blob_store_bytes
    from teams.models import Team
    from training.models import Dataset

    blob = blob_store_bytes(data=f"dataset {team} {name} {input_shape} {fmt}".encode()).blob
    defaults = dict(
        num_examples=180,
        num_validation=60,
        num_classes=3,
        target="classes",
        class_histogram={"0": 70, "1": 60, "2": 50},
        labels=["cat", "dog", "bird"],
        x_sha256=f"x-{name}",
    )
    return Dataset.objects.create(
        team=Team.objects.get(slug=team),
        name=name,
        format=fmt,
        status=status or Dataset.Status.READY,
        blob=blob,
        filename=f"{name}.{'zip' if fmt == Dataset.Format.IMAGES else 'npz'}",
        input_shape=None if fmt == Dataset.Format.IMAGES else list(input_shape),
        created_by=user,
        **{**defaults, **fields},
    )
