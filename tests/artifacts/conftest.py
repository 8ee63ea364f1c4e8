"""Artifact store backends under test: the filesystem, and S3 through moto_server.

moto_server is an in-memory S3-compatible server from PyPI. It stands in for MinIO (the
bucket used by docker-compose), which is not installable on these machines.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from artifacts.stores import get_blob_store
from tests.conftest import free_port, wait_until


@pytest.fixture(scope="session")
def moto_s3():
    """Start `moto_server` on loopback and yield its endpoint URL."""
    import boto3

    port = free_port()
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"

    def up():
        try:
            boto3.client(
                "s3",
                endpoint_url=endpoint,
                region_name="us-east-1",
                aws_access_key_id="test",
                aws_secret_access_key="test",
            ).list_buckets()
            return True
        except Exception:
            return False

    try:
        wait_until(up, timeout=30, message="moto_server to start")
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(params=["filesystem", "s3"])
def blob_store(request, settings, tmp_path):
    """Configure each artifact backend in turn and return the active store."""
    if request.param == "s3":
        import boto3

        endpoint = request.getfixturevalue("moto_s3")
        bucket = f"modelhub-{os.urandom(4).hex()}"
        boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
        ).create_bucket(Bucket=bucket)
        settings.MODELHUB_S3 = {
            **settings.MODELHUB_S3,
            "bucket_name": bucket,
            "endpoint_url": endpoint,
            "access_key": "test",
            "secret_key": "test",
            "region_name": "us-east-1",
        }
        settings.MODELHUB_ARTIFACT_BACKEND = "s3"
    else:
        settings.MODELHUB_ARTIFACT_BACKEND = "filesystem"
        settings.MODELHUB_ARTIFACT_ROOT = tmp_path / "artifacts"
    get_blob_store.cache_clear()
    store = get_blob_store()
    assert store.name == request.param
    yield store
    get_blob_store.cache_clear()
