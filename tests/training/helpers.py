"""Helpers for job tests: a ready backbone and datasets, posting jobs, waiting for them."""

from tests import model_factory as mf
from tests.registry_helpers import ready_backbone, upload, wait_status

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
    assert job["status"] == "succeeded", job
    head_id = job["result"]["head_versions"][0]
    assert author.post(f"/api/heads/{head_id}/submit/").status_code == 200
    assert reviewer.post(f"/api/heads/{head_id}/approve/").status_code == 200
    return head_id
