"""Registry helpers for API tests: upload, wait for the worker, a ready backbone, a settled head."""

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
