"""The load bench's data: a team, users and models seeded through the API, and the fine_tune job
sized by two calibration jobs to end inside the load window (bench/load.py).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from bench.load_stack import App, manage

TEAM = "bench"
PASSWORD = "load-bench-password-7Qx"  # noqa: S105 - a throwaway account in a throwaway database
# Sizing the fine_tune job: two calibration jobs (1 warm-up + 1 and + 5 epochs, unloaded) give the
# seconds per epoch and the fixed cost (loading, registration); the job is sized to end at
# FINISH_AT of the load window if training runs LOAD_SLOWDOWN times slower under load (1.0 to 1.5
# measured here at 24 clients, with other work on the machine): at about 47% of the window without
# any slow-down, past its end only beyond about 2x.
CALIBRATION_EPOCHS = (1, 5)
LOAD_SLOWDOWN = 1.5
FINISH_AT = 0.7


# ---------------------------------------------------------------------------------------------
# Seeding through the API


class Api:
    def __init__(self, base: str, token: str) -> None:
        import requests

        self.base = base
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    def call(self, method: str, path: str, *, expect: tuple[int, ...] = (200, 201, 202), **kwargs) -> dict:
        response = self.session.request(method, self.base + path, timeout=120, **kwargs)
        if response.status_code not in expect:
            raise SystemExit(f"seed: {method} {path} answered {response.status_code}: {response.text[:2000]}")
        return response.json()

    def upload(self, path: str, file: Path, **fields) -> dict:
        with open(file, "rb") as handle:
            return self.call("POST", path, data=fields, files={"file": (file.name, handle)})

    def wait(self, path: str, *, pending=("validating", "queued", "running"), timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            body = self.call("GET", path)
            if body.get("status") not in pending:
                return body
            if time.monotonic() > deadline:
                raise SystemExit(f"seed: {path} still {body.get('status')!r} after {timeout:.0f} s")
            time.sleep(0.3)


@dataclass
class Seed:
    tokens: dict[str, str]
    backbone: int
    load_dataset: int
    heads: list[int]
    backbones: list[int]
    jobs: list[int]
    timings: dict = field(default_factory=dict)


def ok(body: dict, what: str, wanted: str) -> dict:
    if body.get("status") != wanted:
        raise SystemExit(f"seed: {what} ended {body.get('status')!r}, expected {wanted!r}: {json.dumps(body)[:3000]}")
    return body


def seed(app: App, files: Path) -> Seed:
    start = time.monotonic()
    tokens = {}
    roles = {"author": "member", "reviewer": "reviewer", "client1": "member", "client2": "member"}
    for username, role in roles.items():
        out = manage(
            app.env, "create_user", username, "--team", TEAM, "--role", role, "--password", PASSWORD, "--print-token"
        )
        tokens[username] = out.strip().splitlines()[-1].strip()
    author, reviewer = Api(app.base, tokens["author"]), Api(app.base, tokens["reviewer"])
    users_s = time.monotonic() - start

    created = author.upload("/api/backbones/", files / "backbone.keras", team=TEAM, name="tiny")
    backbone = ok(author.wait(f"/api/backbones/{created['id']}/"), "the backbone upload", "ready")
    datasets = {}
    for name in ("small", "load"):
        body = author.upload("/api/datasets/", files / f"{name}.npz", team=TEAM, name=name)
        datasets[name] = ok(author.wait(f"/api/datasets/{body['id']}/"), f"dataset {name}", "ready")["id"]
    trained = author.call(
        "POST",
        "/api/jobs/",
        json={
            "team": TEAM,
            "kind": "train_heads",
            "backbone": backbone["id"],
            "mode": "joint",
            "epochs": 2,
            "batch_size": 32,
            "learning_rate": 0.05,
            "seed": 0,
            "tasks": [{"task": f"seed-{i}", "dataset": datasets["small"], "head": {"type": "dense"}} for i in range(2)],
        },
    )
    trained = ok(author.wait(f"/api/jobs/{trained['id']}/"), "the train_heads job", "succeeded")
    heads = list(trained["result"]["head_versions"])
    for head in heads:  # approved heads with validation data: the forgetting report evaluates them
        author.call("POST", f"/api/heads/{head}/submit/")
        reviewer.call("POST", f"/api/heads/{head}/approve/", json={"comment": "ok"})
    for index in range(3):
        body = author.upload(
            "/api/heads/",
            files / f"head{index}.keras",
            backbone=str(backbone["id"]),
            task=f"upload-{index}",
            labels=json.dumps(["a", "b", "c"]),
        )
        ok(author.wait(f"/api/heads/{body['id']}/"), f"head upload {index}", "draft")
        heads.append(body["id"])
    return Seed(
        tokens=tokens,
        backbone=backbone["id"],
        load_dataset=datasets["load"],
        heads=heads,
        backbones=[backbone["id"]],
        jobs=[trained["id"]],
        timings={"users_s": round(users_s, 1), "seed_s": round(time.monotonic() - start, 1)},
    )


def fine_tune_params(seed_: Seed, epochs: int) -> dict:
    return {
        "team": TEAM,
        "kind": "fine_tune",
        "backbone": seed_.backbone,
        "dataset": seed_.load_dataset,
        "task": "load-ft",
        "head": {"type": "dense"},
        "unfreeze_top": 1,
        "warmup_epochs": 1,
        "epochs": epochs,
        "batch_size": 32,
        "learning_rate": 0.01,
        "seed": 0,
    }


def parse_time(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def calibrate(app: App, seed_: Seed) -> dict:
    """Two short fine_tune jobs, unloaded (1 + 1 and 1 + 5 epochs): seconds per epoch and fixed overhead."""
    author = Api(app.base, seed_.tokens["author"])
    seconds = {}
    for epochs in CALIBRATION_EPOCHS:
        job = author.call("POST", "/api/jobs/", json=fine_tune_params(seed_, epochs))
        body = ok(
            author.wait(f"/api/jobs/{job['id']}/", pending=("queued", "running")), "a calibration job", "succeeded"
        )
        seed_.backbones.append(body["result"]["backbone_version"])
        seed_.jobs.append(job["id"])
        seconds[epochs] = parse_time(body["finished_at"]) - parse_time(body["started_at"])
    short, long = CALIBRATION_EPOCHS
    # The difference of the two jobs is noisy on a shared machine: not less than 3/4 of the long
    # job's time per epoch (an upper bound, fixed cost included).
    per_epoch = max((seconds[long] - seconds[short]) / (long - short), 0.75 * seconds[long] / (1 + long))
    overhead = max(0.0, seconds[short] - (1 + short) * per_epoch)
    return {
        "jobs_s": [round(seconds[e], 2) for e in CALIBRATION_EPOCHS],
        "s_per_epoch": round(per_epoch, 3),
        "overhead_s": round(overhead, 2),
    }


def planned_epochs(calibration: dict, seconds: float) -> int:
    """Fine-tune epochs (after the warm-up epoch) that end at FINISH_AT of the window under load."""
    budget = FINISH_AT * seconds / LOAD_SLOWDOWN - calibration["overhead_s"]
    return max(2, int(budget / calibration["s_per_epoch"]) - 1)
