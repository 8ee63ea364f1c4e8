"""`pip install ./client` into a fresh venv, then drive a live app with the `modelhub` CLI as CI would:
import a folder of full models, review with two users, assemble, download and verify, train a head.

The live app is gunicorn plus a Celery worker of its own on the test database
(tests/api/live_app.py). The venv is made from a copy of client/ with nothing but pip: what
users install is what is tested, and it must not pull in TensorFlow or Django.
"""

import hashlib
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests import model_factory as mf
from tests.api.live_app import LiveClient, flush_redis, isolated_env, live_server, live_worker
from tests.conftest import REPO_ROOT
from tests.training.helpers import ready_dataset

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "pw-Author-123"
SERVER_PACKAGES = ("tensorflow", "keras", "django", "djangorestframework", "celery", "torch", "jax")
WAIT = ("--timeout", "300")


@pytest.fixture(scope="module")
def client_bin(tmp_path_factory) -> Path:
    """A fresh venv with ./client installed by pip (from a copy, as a user's checkout); its bin folder."""
    root = tmp_path_factory.mktemp("client-venv")
    source = root / "client"
    shutil.copytree(
        REPO_ROOT / "client", source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist")
    )
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return venv / "bin"


class Cli:
    """Runs `modelhub ...` from the venv with a HOME of its own and only the environment given."""

    def __init__(self, bin_dir: Path, home: Path, **env: str) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.bin_dir = bin_dir
        self.home = home
        self.env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", **env}

    def __call__(self, *args: str, stdin: str = "", expect: int = 0) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(self.bin_dir / "modelhub"), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.home,
            timeout=400,
        )
        assert result.returncode == expect, (
            f"modelhub {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
        return result

    def json(self, *args: str) -> dict | list:
        return json.loads(self(*args, "--json").stdout)


def make_models(folder: Path) -> list[Path]:
    """Three tiny full models sharing one Dense backbone, each with its own head."""
    folder.mkdir()
    backbone = mf.make_backbone(seed=0)
    return [
        mf.save(mf.make_full_model(backbone, kind, units, seed=seed, name=name[0]), folder / f"{name}.keras")
        for name, kind, units, seed in [
            ("sentiment", "dense", 3, 1),
            ("topic", "mlp", 5, 2),
            ("box", "regression", 4, 3),
        ]
    ]


def test_installing_the_client_pulls_in_neither_tensorflow_nor_django(client_bin):
    listed = subprocess.run(
        [str(client_bin / "python"), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
    )
    installed = {package["name"].lower() for package in json.loads(listed.stdout)}
    assert {"modelhub-client", "httpx", "tqdm"} <= installed
    assert not [name for name in installed if name.startswith(SERVER_PACKAGES)], installed

    probe = "import sys, modelhub_client.cli; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = json.loads(subprocess.check_output([str(client_bin / "python"), "-c", probe], text=True).replace("'", '"'))
    assert not [name for name in loaded if name.startswith(SERVER_PACKAGES)], loaded
    version = subprocess.run([str(client_bin / "modelhub"), "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip() == "modelhub-client 0.1.0"


def test_a_ci_pipeline_imports_reviews_assembles_and_downloads_with_the_cli(client_bin, make_member, tmp_path):
    paths = make_models(tmp_path / "models")
    _, author_token = make_member("ci-author", role="member", password=PASSWORD)
    _, reviewer_token = make_member("ci-reviewer", role="reviewer")
    env = isolated_env()
    flush_redis(env["CELERY_BROKER_URL"])

    with live_worker(env, tmp_path / "worker.log"), live_server(env, tmp_path / "gunicorn.log") as url:
        # The author logs in with a password; the token lands in ~/.config/modelhub/config.toml, 0600.
        author = Cli(client_bin, tmp_path / "author")
        login = author("login", url, "--username", "ci-author", "--password-stdin", stdin=PASSWORD + "\n")
        assert "vision (member)" in login.stdout
        config = tmp_path / "author" / ".config" / "modelhub" / "config.toml"
        assert oct(config.stat().st_mode & 0o777) == "0o600" and url in config.read_text()
        # The reviewer's pipeline uses the environment instead.
        reviewer = Cli(client_bin, tmp_path / "reviewer", MODELHUB_URL=url, MODELHUB_TOKEN=reviewer_token)

        # One file is on the server already: the import reuses it and sends the other two.
        with open(paths[0], "rb") as handle:
            staged = LiveClient(url, author_token).post(
                "/api/uploads/", {"team": "vision", "file": handle}, format="multipart"
            )
        assert staged.status_code == 201, staged.text
        result = author(
            "import", str(paths[0].parent), "--team", "vision", "--backbone-name", "e2e", "--wait", *WAIT, "--json"
        )
        imported = json.loads(result.stdout)
        assert imported["status"] == "succeeded", imported
        assert f"sentiment.keras: already on the server (upload {staged.json()['id']})" in result.stderr
        assert "box.keras: uploaded" in result.stderr and "topic.keras: uploaded" in result.stderr
        report = {entry["task"]: entry["head_version"] for entry in imported["report"]}
        assert sorted(report) == ["box", "sentiment", "topic"] and all(entry["ok"] for entry in imported["report"])
        head_ids = [str(report[task]) for task in ("sentiment", "topic", "box")]

        drafts = author.json("heads", "list", "--team", "vision", "--status", "draft")
        assert sorted(str(head["id"]) for head in drafts) == sorted(head_ids)
        table = author("heads", "list", "--team", "vision").stdout
        assert table.splitlines()[0].split()[:3] == ["ID", "TEAM", "TASK"] and "e2e v1" in table

        # Review: the author submits; four eyes: the author cannot approve, the reviewer can.
        author("heads", "submit", *head_ids)
        refused = author("heads", "approve", head_ids[0], expect=1)
        assert "HTTP 403" in refused.stderr
        reviewer("heads", "request-changes", head_ids[2], "--comment", "check the box targets")
        author("heads", "submit", head_ids[2], "--comment", "targets checked")
        approved = reviewer.json("heads", "approve", *head_ids, "--comment", "LGTM")
        assert [head["review"]["reviewed_by"] for head in approved] == ["ci-reviewer"] * 3
        assert {head["status"] for head in approved} == {"approved"}

        # Assemble, wait, download and verify.
        target = tmp_path / "model.zip"
        result = author(
            "assemble", "--team", "vision", "--backbone", str(imported["backbone"]), "--heads", ",".join(head_ids),
            "--name", "e2e", "--download", str(target), *WAIT, "--json",
        )  # fmt: skip
        assembly = json.loads(result.stdout)
        assert assembly["status"] == "ready", assembly
        assert hashlib.sha256(target.read_bytes()).hexdigest() == assembly["sha256"]
        assert target.stat().st_size == assembly["size_bytes"]
        with zipfile.ZipFile(target) as archive:
            assert "model/saved_model.pb" in archive.namelist()
            manifest = json.loads(archive.read("model/assets/manifest.json"))
        assert sorted(entry["task"] for entry in manifest["heads"]) == ["box", "sentiment", "topic"]
        assert sorted(str(task["head_version"]) for task in assembly["tasks"]) == sorted(head_ids)
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]

        # The same through the Python API: the existing assembly comes back, and a download checks out.
        script = """
import json, sys
from modelhub_client import Client
hub = Client()
heads = [int(i) for i in sys.argv[2].split(",")]
assembly = hub.assemble(team="vision", backbone=int(sys.argv[1]), heads=heads, wait=True, timeout=300)
path = hub.download(assembly, sys.argv[3])
approved = sorted(head.id for head in hub.heads(team="vision", status="approved"))
print(json.dumps({"id": assembly.id, "existing": assembly.existing, "file": str(path), "approved": approved}))
"""
        python = subprocess.run(
            [str(client_bin / "python"), "-c", script, str(imported["backbone"]), ",".join(head_ids), str(tmp_path)],
            capture_output=True,
            text=True,
            env=reviewer.env,
            timeout=400,
        )
        assert python.returncode == 0, python.stderr
        again = json.loads(python.stdout)
        assert (again["id"], again["existing"]) == (assembly["id"], True)
        assert Path(again["file"]).name == "e2e.zip" and Path(again["file"]).read_bytes() == target.read_bytes()
        assert again["approved"] == sorted(int(i) for i in head_ids)

        # Train a head and follow it: the log streams to stderr while stdout keeps the job's JSON.
        dataset = ready_dataset(LiveClient(url, author_token), mf.make_classification_npz(tmp_path / "train.npz"))
        result = author(
            "jobs", "train-head", "--team", "vision", "--backbone", str(imported["backbone"]),
            "--dataset", str(dataset["id"]), "--task", "intent", "--epochs", "2", "--seed", "1",
            "--follow", *WAIT, "--json",
        )  # fmt: skip
        job = json.loads(result.stdout)
        assert (job["kind"], job["status"]) == ("train_head", "succeeded"), job
        assert "epoch 1/2" in result.stderr and "epoch 2/2" in result.stderr
        assert f"{job['id']}" in author("jobs", "list", "--team", "vision").stdout
        refused = author("jobs", "cancel", str(job["id"]), expect=1)
        assert "HTTP 409" in refused.stderr

        # A wrong id comes back as the server's error envelope with --json, and exit status 1.
        missing = author("assemblies", "show", "999999", "--json", expect=1)
        assert json.loads(missing.stdout)["error"]["code"] == "not_found"

        # Logging out revokes the saved token on the server.
        saved_token = re.search(r'token = "([^"]+)"', config.read_text()).group(1)
        assert "Revoked the token" in author("logout").stdout
        assert saved_token not in config.read_text()
        assert LiveClient(url, saved_token).get("/api/teams/").status_code == 401
