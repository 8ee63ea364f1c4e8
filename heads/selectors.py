"""Reads of tasks, head versions, history and imports, scoped to the user's teams."""

from collections.abc import Iterable

from django.contrib.auth.models import AbstractBaseUser
from django.db import connections
from django.db.models import Exists, F, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Collate

from backbones.models import BackboneVersion
from core.errors import ConflictError, NotFoundError
from heads.models import HeadComment, HeadEvent, HeadVersion, ModelImport, Task
from teams.models import Team
from teams.selectors import scoped_to_member, team_object_get


def head_list(*, user: AbstractBaseUser, filters: dict | None = None) -> QuerySet[HeadVersion]:
    """Return head versions of the user's teams, filtered by backbone, status, task, team or text."""
    filters = filters or {}
    queryset = HeadVersion.objects.select_related(
        "task", "task__team", "backbone", "blob", "branch_blob", "created_by", "reviewed_by", "carried_by"
    )
    if not user.is_authenticated:
        return queryset.none()
    queryset = queryset.filter(task__team__memberships__user=user)
    if filters.get("team"):
        queryset = queryset.filter(task__team__slug=filters["team"])
    if filters.get("backbone"):
        queryset = queryset.filter(backbone_id=filters["backbone"])
    if filters.get("status"):
        queryset = queryset.filter(status=filters["status"])
    if filters.get("task"):
        queryset = queryset.filter(task__slug=filters["task"])
    if filters.get("q"):
        text = filters["q"]
        queryset = queryset.filter(
            Q(task__slug__icontains=text) | Q(description__icontains=text) | Q(task__description__icontains=text)
        )
    return queryset.order_by("task__slug", "-version")


def head_versions_by_id(*, ids: Iterable[int], team: Team | None = None, lock: bool = False) -> QuerySet[HeadVersion]:
    """Return the head versions with these ids, with their tasks; only `team`'s when given.

    Not scoped to a user: for services that checked the user's team already, and the admin.
    With ``lock`` (inside a transaction) the head version rows are locked until it ends.
    """
    queryset = HeadVersion.objects.filter(pk__in=list(ids)).select_related("task")
    if team is not None:
        queryset = queryset.filter(task__team=team)
    return queryset.select_for_update(of=("self",)) if lock else queryset


def head_versions_on_backbones(*, backbone_ids: Iterable[int]) -> QuerySet[HeadVersion]:
    """Return every head version on these backbone versions (for a family's lineage aggregates)."""
    return HeadVersion.objects.filter(backbone_id__in=list(backbone_ids))


def head_versions_of_tasks(*, tasks) -> QuerySet[HeadVersion]:
    """Return every head version of `tasks` (a queryset or list of Task), any status."""
    return HeadVersion.objects.filter(task__in=tasks)


def head_approved_list(*, backbone: BackboneVersion) -> QuerySet[HeadVersion]:
    """Return the approved head versions on `backbone`, with their tasks (any order)."""
    return HeadVersion.objects.filter(backbone=backbone, status=HeadVersion.Status.APPROVED).select_related("task")


# --- The rules an assembly is built by: one place each --------------------------------------


def heads_in_task_order(heads: QuerySet[HeadVersion] | Iterable[HeadVersion]):
    """Order head versions as an assembly numbers its tasks (task_id = index): by task slug, then version.

    Slugs compare by code point (they are lowercase ASCII). A QuerySet is ordered in SQL (a
    binary collation: PostgreSQL's default language collation skips hyphens) and returned as a
    QuerySet, so pages and slices stay in the database; anything else is sorted into a list.
    """
    if isinstance(heads, QuerySet):
        collation = "C" if connections[heads.db].vendor == "postgresql" else "BINARY"
        return heads.order_by(Collate("task__slug", collation), "version")
    return sorted(heads, key=lambda head: (head.task.slug, head.version))


def head_is_latest_approved() -> Exists:
    """A condition on head versions: no newer approved version of the same task is on the same backbone.

    The one definition of "the latest approved version of each task", the default choice of heads
    of an assembly: head_latest_approved_list filters by it, head_mark_latest_approved marks by it.
    """
    newer = HeadVersion.objects.filter(
        task=OuterRef("task"),
        backbone=OuterRef("backbone"),
        status=HeadVersion.Status.APPROVED,
        version__gt=OuterRef("version"),
    )
    return ~Exists(newer)


def head_latest_approved_list(*, heads: QuerySet[HeadVersion]) -> QuerySet[HeadVersion]:
    """Narrow approved `heads` (one backbone) to the latest version of each task, in SQL.

    Pages, counts and sums over 10,000 tasks stay in the database.
    """
    return heads.filter(head_is_latest_approved())


def head_mark_latest_approved(*, heads: QuerySet[HeadVersion]) -> QuerySet[HeadVersion]:
    """Annotate `heads` with ``is_latest_approved`` (same query): pages that list every version and tick the latest."""
    return heads.annotate(is_latest_approved=head_is_latest_approved())


def head_get(*, user: AbstractBaseUser, pk) -> HeadVersion:
    """Return one head version of the user's teams, or raise NotFoundError (404)."""
    head = head_list(user=user).filter(pk=pk).first()
    if head is None:
        raise NotFoundError(f"Head version {pk} was not found in any of your teams.")
    return head


# --- Authorship by provenance (four eyes) ---------------------------------------------------

# Readable phrases, second person: "You " + phrase. Keys are user ids.
Authors = dict[int, list[str]]


def head_label(head: HeadVersion) -> str:
    """Return 'sentiment v3 (head version 12)'."""
    return f"{head.task.slug} v{head.version} (head version {head.pk})"


def _add_author(authors: Authors, user_id: int | None, how: str) -> None:
    if user_id is None:
        return
    phrases = authors.setdefault(user_id, [])
    if how not in phrases:
        phrases.append(how)


def job_requesters(*, job, made: str, requested: str = "requested") -> Authors:
    """Return who requested `job` (a training.Job) and every earlier attempt it retried, and who retried them.

    A retry keeps the original requester in ``created_by`` and names the retrier in ``retried_by``;
    both count, for the job and each job it retried (``retry_of``, followed to the first attempt).
    ``made`` ends each phrase, e.g. "which made sentiment v3".
    """
    authors: Authors = {}
    seen = set()
    while job is not None and job.pk not in seen:
        seen.add(job.pk)
        what = f"job {job.pk} ({job.kind})"
        _add_author(authors, job.created_by_id, f"{requested} {what}, {made}")
        _add_author(authors, job.retried_by_id, f"retried {what}, {made}")
        job = job.retry_of
    return authors


def _merge(authors: Authors, more: Authors) -> Authors:
    for user_id, phrases in more.items():
        for how in phrases:
            _add_author(authors, user_id, how)
    return authors


def head_version_authors(*, head: HeadVersion) -> Authors:
    """Return every author of a head version by provenance: user id -> how they authored it.

    The one rule every four-eyes check uses (approve, request changes, aliases, forgetting
    reports, the admin). Authors are the version's creator, the creators of every version it
    was carried or derived from (``carried_from``, followed to the first), and whoever requested
    (or retried) the job that made it or any of those versions. A copy carried without a recorded
    job counts its carrier too.

    Example:
        user.pk in head_version_authors(head=head)  # True: this user may not approve or alias it
    """
    authors: Authors = {}
    label = head_label(head)
    seen = set()
    current = head
    while current is not None and current.pk not in seen:
        seen.add(current.pk)
        if current is head:
            _add_author(authors, current.created_by_id, f"authored {label}")
            made = f"which made {label}"
        else:
            _add_author(
                authors, current.created_by_id, f"authored {head_label(current)}, which {label} was carried from"
            )
            made = f"which made {head_label(current)}, which {label} was carried from"
        if current.job_id is not None:
            _merge(authors, job_requesters(job=current.job, made=made))
        elif current.carried_by_id is not None:
            _add_author(authors, current.carried_by_id, f"carried {head_label(current)}")
        current = current.carried_from
    return authors


def heads_carry_authors(*, heads, job) -> Authors:
    """Return who would author copies of `heads` carried by `job` (a training.Job): their authors and its requesters.

    A forgetting report's accept approves such copies at once, so it refuses these users.
    """
    authors: Authors = {}
    if job is not None:
        _merge(authors, job_requesters(job=job, made="whose forgetting report this is", requested="started"))
    for head in heads:
        for user_id, phrases in head_version_authors(head=head).items():
            for how in phrases:
                _add_author(authors, user_id, f"{how}, which accepting would carry")
    return authors


def head_history(*, head: HeadVersion) -> QuerySet[HeadEvent]:
    return head.events.select_related("actor").order_by("created_at", "id")


def review_queue(*, user: AbstractBaseUser, team_slug: str | None = None) -> QuerySet[HeadVersion]:
    """Head versions waiting for review in the user's teams (excluding their own)."""
    queryset = head_list(user=user, filters={"status": HeadVersion.Status.IN_REVIEW, "team": team_slug})
    return queryset.exclude(created_by=user)


# Fields head_version_authors reads of a head version it walks through, and of a job.
_PROVENANCE_HEAD_FIELDS = ("id", "version", "task__slug", "created_by_id", "carried_by_id", "carried_from_id", "job_id")
_PROVENANCE_JOB_FIELDS = ("id", "kind", "created_by_id", "retried_by_id", "retry_of_id")


def _load_chain(rows: list, *, field: str, fetch) -> None:
    """Follow the foreign key `field` from `rows`, one query per level, caching each target on its row."""
    descriptor = getattr(type(rows[0]), field) if rows else None
    seen = {row.pk: row for row in rows}
    level = rows
    while level:
        wanted = {getattr(row, f"{field}_id") for row in level} - {None}
        missing = wanted - seen.keys()
        if missing:
            seen.update((row.pk, row) for row in fetch(missing))
        next_level = []
        for row in level:
            target = seen.get(getattr(row, f"{field}_id"))
            if target is not None and not descriptor.field.is_cached(row):
                descriptor.field.set_cached_value(row, target)
                next_level.append(target)
        level = next_level


def head_provenance_load(*, heads: list[HeadVersion]) -> None:
    """Load everything head_version_authors reads for `heads` in a few queries, whatever their number.

    The versions each was carried from, the jobs that made them and the jobs those retried are
    read level by level (one query per step of the longest chain, none where no head has one) and
    cached on the instances, so head_version_authors(head=...) then runs without a query. The rule
    itself stays in head_version_authors. `heads` need their task loaded (head_list does).
    """
    if not heads:
        return
    _load_chain(
        heads,
        field="carried_from",
        fetch=lambda ids: (
            HeadVersion.objects.filter(pk__in=ids).select_related("task").only(*_PROVENANCE_HEAD_FIELDS).order_by()
        ),
    )
    chain, seen = [], set()
    for head in heads:
        current = head
        while current is not None and current.pk not in seen:
            seen.add(current.pk)
            chain.append(current)
            current = current.carried_from  # cached above: no query
    job_model = HeadVersion._meta.get_field("job").related_model  # training.Job, above heads: never imported
    job_ids = {head.job_id for head in chain} - {None}
    if not job_ids:
        return
    jobs = {job.pk: job for job in job_model.objects.filter(pk__in=job_ids).only(*_PROVENANCE_JOB_FIELDS).order_by()}
    for head in chain:
        if head.job_id in jobs:
            HeadVersion.job.field.set_cached_value(head, jobs[head.job_id])
    _load_chain(
        list(jobs.values()),
        field="retry_of",
        fetch=lambda ids: job_model.objects.filter(pk__in=ids).only(*_PROVENANCE_JOB_FIELDS).order_by(),
    )


# How many of the newest submissions review_waiting_list reads to find the ones a user may review.
REVIEW_WAITING_CANDIDATES = 100


def review_waiting_list(*, user: AbstractBaseUser, team: Team, limit: int) -> list[HeadVersion]:
    """Return up to `limit` head versions of `team` in review that `user` may approve, newest submission first.

    Four eyes by provenance: the review queue's candidates (not created by the user) minus every
    version the user authored by head_version_authors (carried from their version, made by a job
    they requested or retried). Reads the newest REVIEW_WAITING_CANDIDATES submissions in a
    constant number of queries (head_provenance_load). Each version carries ``submitted_at``, the
    time of its latest submission. Whether the user's role may review is the caller's check
    (Membership.can_review).
    """
    submitted = HeadEvent.objects.filter(head=OuterRef("pk"), action=HeadEvent.Action.SUBMIT).order_by("-created_at")
    candidates = list(
        review_queue(user=user, team_slug=team.slug)
        .annotate(submitted_at=Subquery(submitted.values("created_at")[:1]))
        .defer("spec", "metrics", "origin", "branch", "backbone__spec")  # a list needs none of them
        .order_by(F("submitted_at").desc(nulls_last=True), "-pk")[:REVIEW_WAITING_CANDIDATES]
    )
    head_provenance_load(heads=candidates)
    return [head for head in candidates if user.pk not in head_version_authors(head=head)][:limit]


def import_get(*, user: AbstractBaseUser, pk) -> ModelImport:
    return team_object_get(ModelImport.objects.select_related("team"), user=user, pk=pk, label="Import")


def import_list(*, user: AbstractBaseUser) -> QuerySet[ModelImport]:
    return scoped_to_member(ModelImport.objects.select_related("team"), user=user)


def head_comment_list(*, head: HeadVersion) -> QuerySet[HeadComment]:
    """Return the comments on a head version, oldest first."""
    return head.comments.select_related("author").order_by("created_at", "id")


def task_list(*, user: AbstractBaseUser, team_slug: str | None = None) -> QuerySet[Task]:
    """Return the tasks of the user's teams (optionally one team), by slug."""
    queryset = scoped_to_member(Task.objects.select_related("team"), user=user)
    if team_slug:
        queryset = queryset.filter(team__slug=team_slug)
    return queryset.order_by("slug")


def task_of_team(*, team: Team, slug: str) -> Task | None:
    """Return `team`'s task `slug`, or None (not user-scoped: the caller checked the membership)."""
    return Task.objects.filter(team=team, slug=slug).first()


def head_branch(*, head: HeadVersion) -> dict | None:
    """Return what a head version's branch owns, or None when the head reads the backbone's features.

    Returns:
        ``{"after_layer", "num_layers", "params", "size_bytes", "sha256", "layers"}``: ``layers``
        are the backbone layers the branch owns, in graph order, as ``{"index", "name", "type",
        "params"}`` with the position, type and parameter count of that layer in the backbone's
        spec (None where the spec does not list it, e.g. a layer inside a nested model).
        No query when ``head`` came from head_list or head_get (backbone and branch blob loaded).
    """
    branch = head.branch
    if not branch or head.branch_blob_id is None:
        return None
    spec_layers = (head.backbone.spec or {}).get("layers", [])
    by_name = {layer.get("name"): (index, layer) for index, layer in enumerate(spec_layers)}
    by_leaf = {str(name).rsplit("/", 1)[-1]: found for name, found in by_name.items()}
    layers = []
    for name in branch.get("layers") or []:
        index, layer = by_name.get(name) or by_leaf.get(name.rsplit("/", 1)[-1]) or (None, {})
        layers.append({"index": index, "name": name, "type": layer.get("type"), "params": layer.get("params")})
    return {
        "after_layer": branch.get("after_layer", ""),
        "num_layers": len(layers),
        "params": int(branch.get("params") or 0),
        "size_bytes": head.branch_blob.size_bytes,
        "sha256": head.branch_blob.sha256,
        "layers": layers,
    }


# --- Compare: only validated files ----------------------------------------------------------

# Statuses whose file no worker has validated (yet, or ever): compare never reads their bytes.
NOT_VALIDATED_STATUSES = (HeadVersion.Status.VALIDATING, HeadVersion.Status.REJECTED)


def head_get_comparable(*, user: AbstractBaseUser, pk) -> HeadVersion:
    """Return a head version of the user's teams whose file a worker validated, for compare.

    Raise NotFoundError (404) as head_get does, and ConflictError (409, code head_not_validated)
    while its validation is pending or after it failed: compare reads the weights in the file.
    """
    head = head_get(user=user, pk=pk)
    if head.status == HeadVersion.Status.VALIDATING:
        state, hint = "is still being validated by a worker", f"Wait until GET /api/heads/{pk}/ says 'draft'"
    elif head.status == HeadVersion.Status.REJECTED:
        state, hint = "was rejected by validation", "Upload a corrected file as a new version"
    else:
        return head
    raise ConflictError(
        f"Head version {pk} ({head.task.slug} v{head.version}) {state}; compare reads only head versions "
        f"whose file a worker has validated. {hint}, then compare again.",
        code="head_not_validated",
        detail={"head": head.pk, "status": head.status},
    )
