"""Registry helpers for API tests: upload, wait for the worker, a ready backbone, a settled head,
full models imported with their heads approved (the assembly seed scenario), a job's final status
with its error, and an HTTP client with APIClient's interface for a server started outside the test."""

import contextlib
from pathlib import Path

from tests.conftest import wait_until


def wait_status(client, url: str, *, pending=("validating", "queued", "running"), timeout: float = 90) -> dict:
    """GET `url` until its status leaves `pending`; return the final body."""

    def settled():
        body = client.get(url).json()
        return body if body.get("status") not in pending else None

    return wait_until(settled, timeout=timeout, interval=0.3, message=f"{url} to settle")


def upload(client, url: str, path, **fields):
    with open(path, "rb") as handle:
        return client.post(url, {**fields, "file": handle}, format="multipart")


def ready_backbone(client, path, *, team: str = "vision", name: str = "tiny") -> dict:
    created = upload(client, "/api/backbones/", path, team=team, name=name).json()
    body = wait_status(client, f"/api/backbones/{created['id']}/")
    assert body["status"] == "ready", body
    return body


def settled_head(client, path, *, backbone: int, task: str, **fields) -> dict:
    response = upload(client, "/api/heads/", path, backbone=backbone, task=task, **fields)
    assert response.status_code == 202, response.json()
    return wait_status(client, f"/api/heads/{response.json()['id']}/")


def import_and_approve(
    author, reviewer, model_files=None, *, paths=None, backbone_name: str = "shared", feature_layer="features"
) -> dict:
    """Import full models as one backbone + draft heads; submit and approve them all.

    By default the three seed full models of `model_files`; or the files at `paths`.
    """
    if paths is None:
        paths = [model_files[key] for key in ("full_sentiment", "full_topic", "full_box")]
    fields = {"team": "vision", "backbone_name": backbone_name}
    if feature_layer:
        fields["feature_layer"] = feature_layer
    with contextlib.ExitStack() as stack:
        handles = [stack.enter_context(open(path, "rb")) for path in paths]
        response = author.post("/api/imports/", {**fields, "files": handles}, format="multipart")
    body = wait_status(author, f"/api/imports/{response.json()['id']}/", timeout=300)
    assert body["status"] == "succeeded", body
    for entry in body["report"]:
        assert author.post(f"/api/heads/{entry['head_version']}/submit/").status_code == 200
        assert reviewer.post(f"/api/heads/{entry['head_version']}/approve/").status_code == 200
    return body


def assert_job_succeeded(body: dict) -> dict:
    """Fail with the job's recorded error (and its log's tail) unless it succeeded; return the body."""
    assert body.get("status") == "succeeded", (
        f"job {body.get('id')} ended {body.get('status')!r}: error={body.get('error')!r}\n"
        f"log tail: {(body.get('log') or '')[-2000:]}"
    )
    return body


class LiveApi:
    """The part of DRF's APIClient that these helpers use (get, post with format), over real HTTP
    to a server the test started (`make run`), authenticated by a token from /api/auth/token/."""

    def __init__(self, base_url: str, *, username: str, password: str):
        import requests

        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        response = self.session.post(
            f"{self.base_url}/api/auth/token/", json={"username": username, "password": password}, timeout=60
        )
        assert response.status_code == 200, response.text
        self.session.headers["Authorization"] = f"Token {response.json()['token']}"

    def get(self, path: str):
        return self.session.get(self.base_url + path, timeout=60)

    def post(self, path: str, data=None, format: str | None = None):
        url = self.base_url + path
        if format == "json" or data is None:
            return self.session.post(url, json=data, timeout=60)
        fields, files = {}, []
        for key, value in data.items():
            values = value if isinstance(value, list | tuple) else [value]
            if values and all(hasattr(item, "read") for item in values):
                files += [(key, (Path(item.name).name, item)) for item in values]
            else:
                fields[key] = value
        return self.session.post(url, data=fields, files=files, timeout=300)
