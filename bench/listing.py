"""Listing benchmark: head lists, the dashboard and the assembly builder with 10,000 heads on one backbone.

Usage: python bench/listing.py --heads 10000 [--small 300] [--repeats 30] [--keep] [--show-queries]

In a fresh MODELHUB_HOME (temp dir) on the embedded default (SQLite in WAL mode, filesystem
artifacts; DATABASE_URL, CELERY_BROKER_URL and the other EXTERNAL_ENV variables removed), this
process migrates the database and seeds two teams, each with one ready backbone version:

- `large`: --heads tasks with one approved head version each (10,000 head versions on one
  backbone), each with its own small blob (a few bytes, put in the artifact store), an author
  and a reviewer;
- `small`: --small heads the same way, to show that the query count does not grow with N. The
  default, 300, is above the builder's BUILDER_MAX_ROWS (200), so both sizes show the same form
  of the builder (below it, the builder lists every head and makes fewer queries); the tests in
  tests/heads/test_query_counts.py pin the counts at 3 and 30 heads, and for both forms.

Rows are written with bulk_create (no TensorFlow, no worker). Then, through Django's test client
in this process (the whole middleware stack, the same settings as `make run`), it times each
endpoint --repeats times after two warm-up requests, with a member of the team:

- api_heads_first / api_heads_deep: GET /api/heads/?backbone=B, first and last page (token auth);
- dashboard_heads_first / dashboard_heads_deep: GET /heads/?backbone=B, first and last page;
- assembly_builder: GET /assemblies/new/?backbone=B (the latest approved head of every task is
  pre-selected);
- backbone_detail: GET /backbones/B/ (layers, lineage and its heads).

Queries are counted on one extra request per endpoint with CaptureQueriesContext. Prints one
JSON line last: `list_p95_ms` (the worst p95 over the endpoints at --heads; target <= 100),
`queries_per_request` (the most queries any endpoint made at --heads; target <= 10) and
`queries_per_request_small` (the same at --small; equal when the count is constant in N), with
p50/p95/queries per endpoint at both sizes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import EXTERNAL_ENV  # noqa: E402

PAGE_SIZE = 50  # the API's and the dashboard's default page size
LIST_P95_TARGET_MS = 100
QUERIES_TARGET = 10
WARMUP_REQUESTS = 2
BACKBONE_SPEC = {
    "name": "backbone",
    "class_name": "Functional",
    "inputs": [{"name": "inputs", "shape": [8], "dtype": "float32"}],
    "feature_layer": "features",
    "feature_shape": [6],
    "params": {"total": 186, "trainable": 186, "non_trainable": 0},
    "layers": [
        {"name": "inputs", "type": "InputLayer", "params": 0, "trainable": True, "has_weights": False},
        {"name": "hidden", "type": "Dense", "params": 108, "trainable": True, "has_weights": True},
        {"name": "features", "type": "Dense", "params": 78, "trainable": False, "has_weights": True},
    ],
}


def setup_django(home: Path) -> None:
    """Point this process at the embedded default in `home`, then set Django up and migrate."""
    for key in EXTERNAL_ENV:
        os.environ.pop(key, None)
    os.environ["MODELHUB_HOME"] = str(home)
    os.environ["DJANGO_SETTINGS_MODULE"] = "modelhub.settings"
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def seed_team(*, team_slug: str, num_heads: int) -> dict:
    """Create a team with an author, a reviewer, one ready backbone and `num_heads` approved heads."""
    import hashlib

    from django.db import transaction
    from django.utils import timezone

    from artifacts.models import Blob
    from artifacts.services import blob_store_bytes
    from artifacts.stores import get_blob_store
    from backbones.models import BackboneVersion
    from backbones.services import backbone_version_create
    from heads.models import HeadVersion, Task
    from teams.models import Team
    from teams.services import token_for_user, user_create_in_team

    author, _ = user_create_in_team(username=f"{team_slug}-author", team_slug=team_slug, role="member")
    reviewer, _ = user_create_in_team(username=f"{team_slug}-reviewer", team_slug=team_slug, role="reviewer")
    team = Team.objects.get(slug=team_slug)
    backbone = backbone_version_create(
        team=team, user=author, name=f"{team_slug}-backbone", blob=blob_store_bytes(data=team_slug.encode()).blob,
        filename="backbone.keras", feature_layer="features", status=BackboneVersion.Status.READY, spec=BACKBONE_SPEC,
    )  # fmt: skip

    store = get_blob_store()
    scratch = Path(tempfile.mkdtemp(prefix="listing-blobs-"))
    sizes: dict[str, int] = {}
    for index in range(num_heads):
        data = f"head {team_slug} {index}".encode()
        sha256 = hashlib.sha256(data).hexdigest()
        path = scratch / "blob"
        path.write_bytes(data)
        store.put_file(sha256, path)
        sizes[sha256] = len(data)
    shutil.rmtree(scratch, ignore_errors=True)
    now = timezone.now()
    with transaction.atomic():
        Blob.objects.bulk_create([Blob(sha256=sha, size_bytes=size) for sha, size in sizes.items()], batch_size=1000)
        blob_ids = dict(Blob.objects.filter(sha256__in=list(sizes)).values_list("sha256", "pk"))
        Task.objects.bulk_create(
            [Task(team=team, slug=f"task-{index:05d}", labels=["no", "yes"]) for index in range(num_heads)],
            batch_size=1000,
        )
        task_ids = dict(Task.objects.filter(team=team).values_list("slug", "pk"))
        HeadVersion.objects.bulk_create(
            [
                HeadVersion(
                    task_id=task_ids[f"task-{index:05d}"],
                    version=1,
                    backbone=backbone,
                    blob_id=blob_ids[sha],
                    status=HeadVersion.Status.APPROVED,
                    filename=f"task-{index:05d}.keras",
                    labels=["no", "yes"],
                    output_width=2,
                    description=f"Head {index} of the listing benchmark.",
                    created_by=author,
                    reviewed_by=reviewer,
                    reviewed_at=now,
                    spec={"params": {"total": 14}},
                    metrics={"accuracy": 0.9},
                )
                for index, sha in enumerate(sizes)
            ],
            batch_size=1000,
        )
    return {"user": author, "token": token_for_user(user=author), "backbone": backbone.pk, "num_heads": num_heads}


def endpoints(team: dict) -> dict[str, tuple[str, bool]]:
    """Name -> (path, through the API with the token)."""
    backbone = team["backbone"]
    last_page = max(1, math.ceil(team["num_heads"] / PAGE_SIZE))
    return {
        "api_heads_first": (f"/api/heads/?backbone={backbone}", True),
        "api_heads_deep": (f"/api/heads/?backbone={backbone}&page={last_page}", True),
        "dashboard_heads_first": (f"/heads/?backbone={backbone}", False),
        "dashboard_heads_deep": (f"/heads/?backbone={backbone}&page={last_page}", False),
        "assembly_builder": (f"/assemblies/new/?backbone={backbone}", False),
        "backbone_detail": (f"/backbones/{backbone}/", False),
    }


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def measure(team: dict, *, repeats: int, show_queries: bool = False) -> dict:
    """Time every endpoint for `team`'s author and count its queries; return the per-endpoint figures."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    api = Client(HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Token {team['token']}")
    dashboard = Client(HTTP_HOST="localhost")
    dashboard.force_login(team["user"])
    results = {}
    for name, (path, is_api) in endpoints(team).items():
        client = api if is_api else dashboard
        for _ in range(WARMUP_REQUESTS):
            response = client.get(path)
            if response.status_code != 200:
                raise SystemExit(f"GET {path} answered {response.status_code}, expected 200.")
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            response = client.get(path)
            times.append((time.perf_counter() - start) * 1000)
        with CaptureQueriesContext(connection) as queries:
            response = client.get(path)
        if show_queries:
            print(f"--- {name}: GET {path}", file=sys.stderr)
            for query in queries.captured_queries:
                print(f"  [{query['time']}s] {query['sql'][:300]}", file=sys.stderr)
        results[name] = {
            "path": path,
            "p50_ms": round(statistics.median(times), 1),
            "p95_ms": round(percentile(times, 0.95), 1),
            "max_ms": round(max(times), 1),
            "queries": len(queries.captured_queries),
            "body_kb": round(len(response.content) / 1024, 1),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heads", type=int, default=10_000, help="head versions on the large team's backbone")
    parser.add_argument("--small", type=int, default=300, help="head versions on the small team's backbone")
    parser.add_argument("--repeats", type=int, default=30, help="timed requests per endpoint")
    parser.add_argument("--keep", action="store_true", help="keep the MODELHUB_HOME temp dir (named on stderr)")
    parser.add_argument("--show-queries", action="store_true", help="print each endpoint's SQL at --heads to stderr")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="modelhub-listing-"))
    try:
        setup_django(home)
        start = time.perf_counter()
        small = seed_team(team_slug="small", num_heads=args.small)
        large = seed_team(team_slug="large", num_heads=args.heads)
        seed_s = time.perf_counter() - start
        at_small = measure(small, repeats=args.repeats)
        at_large = measure(large, repeats=args.repeats, show_queries=args.show_queries)
    finally:
        if args.keep:
            print(f"MODELHUB_HOME kept at {home}", file=sys.stderr)
        else:
            shutil.rmtree(home, ignore_errors=True)

    for name in at_large:
        small_row, large_row = at_small[name], at_large[name]
        print(
            f"{name:24s} N={args.small:>6}: p50 {small_row['p50_ms']:7.1f} ms  p95 {small_row['p95_ms']:7.1f} ms"
            f"  {small_row['queries']:3d} queries | N={args.heads:>6}: p50 {large_row['p50_ms']:7.1f} ms"
            f"  p95 {large_row['p95_ms']:7.1f} ms  {large_row['queries']:3d} queries  {large_row['body_kb']:7.1f} KiB",
            file=sys.stderr,
        )
    list_p95_ms = max(entry["p95_ms"] for entry in at_large.values())
    queries = max(entry["queries"] for entry in at_large.values())
    queries_small = max(entry["queries"] for entry in at_small.values())
    constant = all(at_large[name]["queries"] == at_small[name]["queries"] for name in at_large)
    result = {
        "heads": args.heads,
        "small_heads": args.small,
        "database": "sqlite (embedded default)",
        "list_p95_ms": list_p95_ms,
        "list_p95_target_ms": LIST_P95_TARGET_MS,
        "queries_per_request": queries,
        "queries_per_request_small": queries_small,
        "queries_constant_in_n": constant,
        "queries_target": QUERIES_TARGET,
        "met": list_p95_ms <= LIST_P95_TARGET_MS and queries <= QUERIES_TARGET and constant,
        "seed_s": round(seed_s, 1),
        "repeats": args.repeats,
        "endpoints": {
            name: {
                **{key: value for key, value in at_large[name].items() if key != "path"},
                "p50_ms_small": at_small[name]["p50_ms"],
                "p95_ms_small": at_small[name]["p95_ms"],
                "queries_small": at_small[name]["queries"],
            }
            for name in at_large
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
