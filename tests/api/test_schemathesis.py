"""schemathesis against the live app: every operation of /api/schema/, from outside, no failure allowed.

gunicorn and a Celery worker run on the test database (tests/api/live_app.py). A team is seeded
first through the API with real objects (a backbone with approved heads from an import, draft and
in-review heads, a comment, an upload, a dataset, a trained and approved head, a fine-tune job and
its forgetting report, a ready assembly). A schemathesis.toml makes generated ids, team slugs and
names the seeded ones most of the time, so that requests reach the code behind the 404s. Then
``schemathesis run`` (its own venv, scripts/venv_schemathesis.sh) runs all four phases: examples
(the schema's request examples), coverage, fuzzing and stateful (chains along the links it infers
from the schema), with the four CHECKS. Its summary and the app's count of requests by status are
printed, and kept in test-results/schemathesis-<database>.txt. It runs twice: against the full
stack's shape (PostgreSQL, Redis) and against the embedded default (SQLite, filesystem broker and
cache, as `make run` starts it), which a fresh install runs. Anything it reports is a bug in the app or in
the schema: fix that, never the checks.

Environment knobs: MODELHUB_SCHEMATHESIS_MAX_EXAMPLES (default 15), MODELHUB_SCHEMATHESIS_SEED
(default fixed, so that CI runs are reproducible; "random" for a new one).
"""

import json
import os
import re
import subprocess

import pytest

from tests import model_factory as mf
from tests.api.live_app import (
    LiveClient,
    embedded_env,
    embedded_member,
    embedded_setup,
    embedded_shell,
    flush_redis,
    isolated_env,
    live_server,
    live_worker,
    requests_served,
)
from tests.conftest import REPO_ROOT
from tests.registry_helpers import import_and_approve, settled_head, upload, wait_status
from tests.training.helpers import approved_trained_head, finished_job, post_job, ready_dataset

pytestmark = pytest.mark.django_db(transaction=True)

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
PHASES = "examples,coverage,fuzzing,stateful"
DEFAULT_SEED = "20261123"
STATEFUL_FACTOR = 4  # stateful scenarios per example of the other phases
# Bounds for the live app, so that jobs schemathesis manages to start stay small.
LIVE_LIMITS = {
    "MODELHUB_MAX_EPOCHS": "2",
    "MODELHUB_MAX_BATCH_SIZE": "64",
    "MODELHUB_MAX_HEAD_UNITS": "32",
    "MODELHUB_MAX_HIDDEN_UNITS": "32",
    "MODELHUB_MAX_HIDDEN_LAYERS": "2",
    "MODELHUB_MAX_GROWTH_UNITS": "32",
    "MODELHUB_PREDICT_MAX_WAIT": "10",
    # The rate limits are tested in tests/security/test_throttles.py; here they would turn most of the
    # run's POSTs into (documented) 429s and leave the code behind them unexercised.
    **{
        f"MODELHUB_THROTTLE_{scope.upper()}": "off"
        for scope in (
            "compare",
            "predict",
            "evaluate",
            "imports",
            "uploads",
            "webhook_test",
            "tokens",
            "jobs",
            "assemblies",
        )
    },  # fmt: skip
}
# Token ids are small sequential numbers, and fuzzing DELETE /api/tokens/{id}/ with small ids would
# revoke the run's own token half-way (then everything is a correct but useless 401).
RUN_TOKEN_ID = 2_000_000_011
RUN_USERNAME, RUN_PASSWORD = "st-runner", "pw-Runner-123"


@pytest.fixture(scope="module")
def schemathesis_bin() -> str:
    """Create (once; skipped when current) the schemathesis venv; return its executable."""
    subprocess.run([str(REPO_ROOT / "scripts" / "venv_schemathesis.sh")], check=True, cwd=REPO_ROOT)
    return str(REPO_ROOT / ".venv-schemathesis" / "bin" / "schemathesis")


def seed_team(url: str, tokens: dict, model_files, tmp_path) -> dict:
    """Fill team 'vision' through the API, as its members would; return the ids made."""
    author, reviewer = LiveClient(url, tokens["author"]), LiveClient(url, tokens["reviewer"])
    imported = import_and_approve(author, reviewer, model_files)  # backbone 'shared' + 3 approved heads
    backbone = imported["backbone"]
    draft = settled_head(author, model_files["head"], backbone=backbone, task="draft-head", labels='["a","b","c"]')
    assert draft["status"] == "draft", draft
    in_review = settled_head(author, model_files["head"], backbone=backbone, task="review-head")
    assert author.post(f"/api/heads/{in_review['id']}/submit/").status_code == 200
    assert author.post(f"/api/heads/{draft['id']}/comments/", {"body": "first look"}, format="json").status_code == 201
    staged = upload(author, "/api/uploads/", model_files["full_sentiment"], team="vision")
    assert staged.status_code == 201, staged.text
    dataset = ready_dataset(author, mf.make_classification_npz(tmp_path / "train.npz"))
    trained = approved_trained_head(
        author, reviewer, backbone=backbone, dataset=dataset["id"], task="trained", epochs=1
    )
    # Fine-tuning a backbone that has approved heads makes a child backbone and a forgetting report.
    job = post_job(
        author, "fine_tune", backbone=backbone, dataset=dataset["id"], task="tuned", warmup_epochs=1, epochs=1
    )
    job = finished_job(author, job["id"])
    assert job["status"] == "succeeded" and job["forgetting_report"], job
    assembly = author.post("/api/assemblies/", {"team": "vision", "backbone": backbone, "name": "seed"}, format="json")
    assert assembly.status_code == 202, assembly.text
    built = wait_status(
        author, f"/api/assemblies/{assembly.json()['id']}/", pending=("queued", "building", "verifying"), timeout=180
    )
    assert built["status"] == "ready", built
    return {
        "backbone": backbone,
        "heads": [entry["head_version"] for entry in imported["report"]] + [trained, draft["id"], in_review["id"]],
        "dataset": dataset["id"],
        "job": job["id"],
        "report": job["forgetting_report"],
        "assembly": built["id"],
        "upload": staged.json()["id"],
    }


def config_for(seeded: dict, *, max_examples: int) -> str:
    """Return a schemathesis.toml that often (not always) fills ids and names with seeded ones.

    Random values still come through (1 - probability of the time), so 404s and 400s stay tested.
    The stateful phase gets more scenarios than the others get examples: each is a chain of calls
    along the links schemathesis infers (create -> read -> transition ...).
    """
    dictionaries = {
        "teams": ["vision"],
        "backbone-names": ["shared"],
        "backbones": [seeded["backbone"]],
        "datasets": [seeded["dataset"]],
        "heads": seeded["heads"],
        "assemblies": [seeded["assembly"]],
        "jobs": [seeded["job"]],
        "uploads": [seeded["upload"]],
        "reports": [seeded["report"]],
        "usernames": [RUN_USERNAME],
        "passwords": [RUN_PASSWORD],
    }
    lines = [
        f"generation.max-examples = {max_examples}",
        "",
        "[phases.stateful]",
        f"generation.max-examples = {max_examples * STATEFUL_FACTOR}",
        "",
        "[dictionaries]",
    ]
    lines += [f"{name} = {{ values = {json.dumps(values)} }}" for name, values in dictionaries.items()]
    lines += [
        "",
        "[parameters]",
        '"body.team" = { dictionary = "teams", probability = 0.8 }',
        '"query.team" = { dictionary = "teams", probability = 0.5 }',
        '"path.slug" = { dictionary = "teams", probability = 0.8 }',
        '"body.backbone_name" = { dictionary = "backbone-names", probability = 0.5 }',
        '"body.backbone" = { dictionary = "backbones", probability = 0.7 }',
        '"query.backbone" = { dictionary = "backbones", probability = 0.5 }',
        '"body.dataset" = { dictionary = "datasets", probability = 0.7 }',
        '"body.heads[*]" = { dictionary = "heads", probability = 0.7 }',
        '"body.uploads[*]" = { dictionary = "uploads", probability = 0.7 }',
    ]
    for prefix, dictionary in [
        ("heads", "heads"),
        ("backbones", "backbones"),
        ("assemblies", "assemblies"),
        ("datasets", "datasets"),
        ("jobs", "jobs"),
        ("uploads", "uploads"),
        ("forgetting-reports", "reports"),
    ]:
        lines += [
            "",
            "[[operations]]",
            f"include-path-regex = '^/api/{prefix}/\\{{id\\}}/'",
            f'parameters = {{ "path.id" = {{ dictionary = "{dictionary}", probability = 0.8 }} }}',
        ]
    lines += [
        "",
        "[[operations]]",  # the run user's real password, half of the time: 200s as well as 401s and 429s
        "include-path = '/api/auth/token/'",
        'parameters = { "body.username" = { dictionary = "usernames", probability = 0.5 }, '
        '"body.password" = { dictionary = "passwords", probability = 0.5 } }',
    ]
    return "\n".join(lines) + "\n"


def summary_of(output: str) -> str:
    """Return schemathesis's closing summary (from its SUMMARY banner), or the output's tail."""
    start = output.rfind("SUMMARY")
    return output[output.rfind("\n", 0, start) + 1 :] if start >= 0 else output[-4000:]


MEMBERS = [("author", "member"), ("reviewer", "reviewer")]


def postgresql_app(make_member) -> dict:
    """The full stack's shape: the PostgreSQL test database and a Redis broker of its own."""
    from teams.models import ApiToken

    env = isolated_env(**LIVE_LIMITS)
    flush_redis(env["CELERY_BROKER_URL"])
    tokens = {name: make_member(f"st-{name}", role=role)[1] for name, role in MEMBERS}
    runner, tokens["run"] = make_member(RUN_USERNAME, role="admin", password=RUN_PASSWORD)
    ApiToken.objects.filter(user=runner).update(id=RUN_TOKEN_ID)
    return {"env": env, "tokens": tokens}


def sqlite_app(home) -> dict:
    """The embedded default (`make run`): SQLite, the filesystem broker and the file cache, a database of its own."""
    env = embedded_env(home, **LIVE_LIMITS)
    embedded_setup(env)
    tokens = {name: embedded_member(env, f"st-{name}", role=role) for name, role in MEMBERS}
    tokens["run"] = embedded_member(env, RUN_USERNAME, role="admin", password=RUN_PASSWORD)
    embedded_shell(
        env,
        "from teams.models import ApiToken; "
        f"ApiToken.objects.filter(user__username={RUN_USERNAME!r}).update(id={RUN_TOKEN_ID})",
    )
    return {"env": env, "tokens": tokens}


@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
def test_schemathesis_finds_no_failure_in_any_phase(
    schemathesis_bin, make_member, model_files, tmp_path, capsys, database
):
    app = postgresql_app(make_member) if database == "postgresql" else sqlite_app(tmp_path / "home")
    env, tokens = app["env"], app["tokens"]

    server_log = tmp_path / "gunicorn.log"
    with live_worker(env, tmp_path / "worker.log"), live_server(env, server_log) as url:
        seeded = seed_team(url, tokens, model_files, tmp_path)
        seeding_requests = sum(requests_served(server_log).values())
        seed = os.environ.get("MODELHUB_SCHEMATHESIS_SEED", DEFAULT_SEED)
        config = tmp_path / "schemathesis.toml"
        max_examples = int(os.environ.get("MODELHUB_SCHEMATHESIS_MAX_EXAMPLES", "15"))
        config.write_text(config_for(seeded, max_examples=max_examples))
        command = [
            schemathesis_bin, "--config-file", str(config), "run", f"{url}/api/schema/",
            "--header", f"Authorization: Token {tokens['run']}",
            "--checks", CHECKS,
            "--phases", PHASES,
            "--workers", "2",
            "--suppress-health-check", "all",
            "--request-timeout", "60",
            "--generation-database", "none",
            "--no-color",
        ] + ([] if seed == "random" else ["--seed", seed])  # fmt: skip
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)

    # Read once the server has stopped: gunicorn writes an access-log line after its response.
    served = requests_served(server_log, skip=seeding_requests)
    output = result.stdout + result.stderr
    statuses = ", ".join(f"{status}: {count}" for status, count in sorted(served.items()))
    served_line = f"Requests the app served during the run: {sum(served.values())} ({statuses})"
    results_dir = REPO_ROOT / "test-results"
    results_dir.mkdir(exist_ok=True)
    (results_dir / f"schemathesis-{database}.txt").write_text(f"seeded: {seeded}\n{served_line}\n\n{output}")
    with capsys.disabled():
        print(
            f"\n--- schemathesis on {database} (seeded {seeded}; "
            f"output in test-results/schemathesis-{database}.txt) ---"
        )
        print(summary_of(output))
        print(served_line)
    assert result.returncode == 0, f"schemathesis found failures:\n{output[-20000:]}"
    assert re.search(r"Test cases:\s+(\d+) generated, \1 passed", output), output[-4000:]
