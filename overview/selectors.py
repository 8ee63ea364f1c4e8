"""What the Overview page shows of a team: each part read by its owning app's selectors, bounded.

Every part is the newest few rows of one query, so the page costs the same number of queries
whether the team has one of each thing or thousands: the reviews waiting for the user (four eyes
by provenance, heads.selectors.review_waiting_list), the jobs queued or running with their
progress, recent imports, assemblies, alias moves and datasets.
"""

from dataclasses import dataclass, field

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, QuerySet

from assemblies.selectors import assembly_list
from heads.selectors import import_list, review_queue, review_waiting_list
from releases.selectors import alias_move_list
from teams.models import Membership
from training.models import Job
from training.selectors import dataset_list, job_list, job_progress_percent

# Each list shows this many of the newest items, then a "see all" link.
OVERVIEW_LIMIT = 5

# What a list of datasets shows (new fields such as a table's preview can be large: not read here).
DATASET_FIELDS = ("id", "name", "format", "status", "num_examples", "num_classes", "target", "created_at", "error")


@dataclass
class Part:
    """The newest `items` of one kind, and whether there are more than the page shows."""

    items: list = field(default_factory=list)
    has_more: bool = False


def _newest(rows: QuerySet | list, limit: int) -> Part:
    """Read at most limit + 1 rows: the first `limit` are shown, one more says there are more."""
    rows = list(rows[: limit + 1])
    return Part(items=rows[:limit], has_more=len(rows) > limit)


def team_overview(*, user: AbstractBaseUser, membership: Membership, limit: int = OVERVIEW_LIMIT) -> dict:
    """Return the parts of the Overview page for the membership's team, as seen by `user`.

    Returns:
        ``{"reviews", "num_in_queue", "jobs", "imports", "assemblies", "alias_moves", "datasets"}``:
        each list part a Part. ``reviews`` is None when the user's role may not review (then
        ``num_in_queue`` counts the versions waiting for a reviewer); each job carries ``percent``.
    """
    team = membership.team
    reviews, num_in_queue = None, None
    if membership.can_review:
        reviews = _newest(review_waiting_list(user=user, team=team, limit=limit + 1), limit)
    else:
        num_in_queue = review_queue(user=user, team_slug=team.slug).count()
    pending = (Job.Status.QUEUED, Job.Status.RUNNING)
    jobs = job_list(user=user, filters={"team": team.slug}).filter(status__in=pending)
    jobs = _newest(jobs.defer("log", "metrics", "result", "params").order_by("-created_at", "-pk"), limit)
    for job in jobs.items:
        job.percent = job_progress_percent(job=job)
    imports = import_list(user=user).filter(team=team).annotate(num_files=Count("files"))
    assemblies = assembly_list(user=user).filter(team=team).annotate(num_heads=Count("entries"))
    datasets = dataset_list(user=user, team_slug=team.slug).select_related(None).only(*DATASET_FIELDS)
    return {
        "reviews": reviews,
        "num_in_queue": num_in_queue,
        "jobs": jobs,
        "imports": _newest(imports.defer("report", "summary").order_by("-created_at", "-pk"), limit),
        "assemblies": _newest(
            assemblies.defer("manifest", "verification", "backbone__spec").order_by("-created_at", "-pk"), limit
        ),
        "alias_moves": _newest(alias_move_list(user=user, team=team), limit),
        "datasets": _newest(datasets.order_by("-created_at", "-pk"), limit),
    }
