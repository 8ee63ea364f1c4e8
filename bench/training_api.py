"""API overhead of training: 10 heads trained by a `train_heads` job through the REST API and a
real Celery worker, vs the same work done by the library alone in one process.

Both sides do the same steps: load the stored backbone (.keras, safe mode) and the dataset
(.npz), compute backbone features (cold cache), train the heads jointly, save each head.
The API side adds what a user pays for: the HTTP request, the broker hop, the worker's
checksum-verified artifact copies, the progress writes and the registration of the heads.

The Django side runs on the embedded default (SQLite + filesystem broker) in a temporary
MODELHUB_HOME, with a worker subprocess. The worker is warmed up first (TensorFlow import,
first traces) with a small job on a different dataset, so neither side starts cold.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _wait(client, url: str, timeout: float = 900) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(url).json()
        if body.get("status") not in ("validating", "queued", "running"):
            return body
        time.sleep(0.2)
    raise TimeoutError(url)


def _upload(client, url: str, path: Path, **fields) -> dict:
    with open(path, "rb") as handle:
        return client.post(url, {**fields, "file": handle}, format="multipart").json()


def _library_run(
    backbone_path: Path, data_path: Path, num_heads: int, epochs: int, batch_size: int, out: Path
) -> float:
    """The worker's work, in this process, with the library alone; return seconds."""
    from modelhub.ml.freeze import freeze_backbone
    from modelhub.ml.safe_load import load_keras_model
    from modelhub.ml.train.heads import train_heads
    from modelhub.ml.train.model import build_head

    start = time.perf_counter()
    backbone = load_keras_model(backbone_path)
    freeze_backbone(backbone)
    with np.load(data_path, allow_pickle=False) as archive:
        x, y = archive["x"], archive["y"]
    heads = {
        f"t{i}": build_head(backbone.outputs[0].shape[1:], units=10, name=f"t{i}", seed=i) for i in range(num_heads)
    }
    train_heads(
        backbone=backbone,
        heads=heads,
        x=x,
        ys={task: y for task in heads},
        epochs=epochs,
        batch_size=batch_size,
        mode="joint",
        cache_dir=out / "cache",
        seed=0,
    )
    for task, head in heads.items():
        head.save(out / f"{task}.keras")
    return time.perf_counter() - start


def api_overhead(
    *, backbone, x: np.ndarray, y: np.ndarray, num_heads: int = 10, epochs: int = 3, batch_size: int = 64
) -> dict:
    """Return API and library seconds for training `num_heads` heads, and their ratio."""
    home = Path(tempfile.mkdtemp(prefix="bench-modelhub-"))
    os.environ.update(MODELHUB_HOME=str(home), DJANGO_SETTINGS_MODULE="modelhub.settings")
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "MODELHUB_S3_BUCKET", "PGHOST", "PGDATABASE"):
        os.environ.pop(name, None)
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.core.management import call_command
    from rest_framework.test import APIClient

    from teams.services import token_for_user, user_create_in_team

    call_command("migrate", verbosity=0)
    user, _ = user_create_in_team(username="bench", team_slug="bench", role="admin", password="bench-pw-123")
    client = APIClient(SERVER_NAME="localhost")
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for_user(user=user)}")

    files = home / "files"
    files.mkdir()
    backbone_path = files / "backbone.keras"
    backbone.save(backbone_path)
    data_path, warm_path = files / "data.npz", files / "warm.npz"
    np.savez(data_path, x=x, y=y)
    np.savez(warm_path, x=x[:64] + 1.0, y=y[:64])

    worker = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "celery"),
            "-A",
            "modelhub",
            "worker",
            "-Q",
            "default,training,assembly",
            "--concurrency",
            "1",
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "WARNING",
        ],
        cwd=REPO,
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        bb = _wait(
            client,
            f"/api/backbones/{_upload(client, '/api/backbones/', backbone_path, team='bench', name='bb')['id']}/",
        )
        data = _wait(
            client, f"/api/datasets/{_upload(client, '/api/datasets/', data_path, team='bench', name='d')['id']}/"
        )
        warm = _wait(
            client, f"/api/datasets/{_upload(client, '/api/datasets/', warm_path, team='bench', name='w')['id']}/"
        )
        assert bb["status"] == data["status"] == warm["status"] == "ready", (bb, data, warm)

        def job(dataset_id: int, heads: int, job_epochs: int) -> dict:
            tasks = [
                {"task": f"t{i}", "dataset": dataset_id, "head": {"type": "dense"}, "learning_rate": 1e-3}
                for i in range(heads)
            ]
            body = client.post(
                "/api/jobs/",
                {
                    "team": "bench",
                    "kind": "train_heads",
                    "backbone": bb["id"],
                    "mode": "joint",
                    "epochs": job_epochs,
                    "batch_size": batch_size,
                    "seed": 0,
                    "tasks": tasks,
                },
                format="json",
            ).json()
            return _wait(client, f"/api/jobs/{body['id']}/")

        warm_job = job(warm["id"], num_heads, 1)
        assert warm_job["status"] == "succeeded", warm_job
        start = time.perf_counter()
        timed = job(data["id"], num_heads, epochs)
        api_s = time.perf_counter() - start
        assert timed["status"] == "succeeded", timed
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    library_s = _library_run(backbone_path, data_path, num_heads, epochs, batch_size, Path(tempfile.mkdtemp()))
    return {"api_s": api_s, "library_s": library_s, "api_overhead_ratio": api_s / library_s}
