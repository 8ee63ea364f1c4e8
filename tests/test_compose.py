"""docker-compose.yml is valid Compose (no engine runs here; Debian's docker-compose validates)."""

import shutil
import subprocess

import pytest

from tests.conftest import REPO_ROOT


def test_compose_file_validates():
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed; `make test` installs Debian's package.")
    import os

    credentials = {"POSTGRES_PASSWORD": "pw", "MINIO_ROOT_USER": "user", "MINIO_ROOT_PASSWORD": "secret-pw"}
    result = subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", "config", "-q"],
        env={**os.environ, **credentials},  # compose refuses to start without them (see tests/security)
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_compose_has_the_full_stack_with_healthchecks():
    import yaml

    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "minio", "web", "worker"} <= set(services)
    for name in ("postgres", "redis", "minio", "web"):
        assert "healthcheck" in services[name], name
    assert compose.get("volumes")


def test_compose_has_a_prometheus_service_that_scrapes_the_web_metrics():
    import yaml

    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    prometheus = compose["services"]["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]  # not started by a plain `docker compose up`
    assert "ports" not in prometheus  # internal, as every service but nginx
    # "SOURCE:TARGET[:ro]", SOURCE may be "${VAR:-default}"
    pairs = (volume.removesuffix(":ro").rsplit(":", 1) for volume in prometheus["volumes"])
    mounted = {target: source for source, target in pairs}
    assert mounted["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus.yml"
    config = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["static_configs"] == [{"targets": ["web:8000"]}]
    assert job["authorization"]["type"] == "Token"
    assert job["authorization"]["credentials_file"] in mounted  # the token file the service mounts
    assert "web" in compose["x-app"]["environment"]["ALLOWED_HOSTS"]  # the Host header of the scrape
