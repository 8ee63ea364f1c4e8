"""A backbone family as a graph: versions and their parents, the heads on each, the datasets and
jobs that made them, and the assemblies built from them; laid out for a server-side SVG.

One family is every version derived (grow, fine_tune) from one root (an upload or an import).
The graph is read in a fixed number of queries whatever its size (a page of 50 versions with
thousands of heads costs what a page of 2 costs): heads are counted per version and only the
newest HEADS_SHOWN of each are nodes, the rest one "+N heads" node linking to the list.

Assemblies are read through the backbone's reverse relation (``assemblies``), so training never
imports the assemblies app (they are siblings in the layers).
"""

from dataclasses import dataclass, field

from django.db.models import Count, F, Window
from django.db.models.functions import RowNumber
from django.urls import reverse

from backbones.models import BackboneVersion
from heads.selectors import head_versions_on_backbones
from training.models import Dataset, Job
from training.specs import stored_dataset_ids

HEADS_SHOWN = 3
ITEMS_SHOWN = 2  # datasets, jobs and assemblies shown per version (then "+N")
MAX_DEPTH = 200

# Layout (SVG user units).
ROW_HEIGHT = 54
TOP = 34
BACKBONE_WIDTH, NODE_HEIGHT = 150, 30
CHIP_HEIGHT = 24
MADE_BY_WIDTH = 96
HEAD_WIDTH = 104
ITEM_WIDTH = 112
GAP = 8
COLUMN_GAP = 36


@dataclass
class Node:
    """A node of the picture. `id` is unique per row (a dataset used by two versions is drawn in
    both rows); `ref` names the thing itself (``dataset:5``), as the JSON answer does."""

    id: str
    kind: str  # backbone | head | head_group | dataset | job | import | assembly
    label: str
    url: str
    detail: str = ""
    x: float = 0
    y: float = 0
    width: float = 0
    height: float = CHIP_HEIGHT
    current: bool = False

    @property
    def ref(self) -> str:
        return self.id.partition("@")[0]

    def as_json(self) -> dict:
        return {"id": self.ref, "kind": self.kind, "label": self.label, "url": self.url, "detail": self.detail}


@dataclass
class Graph:
    root: BackboneVersion
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[tuple[str, str, str]] = field(default_factory=list)  # (source, target, kind)
    columns: list[dict] = field(default_factory=list)
    width: float = 0
    height: float = 0
    num_versions: int = 0

    def add(self, node: Node) -> Node:
        return self.nodes.setdefault(node.id, node)

    def link(self, source: str, target: str, kind: str) -> None:
        if (source, target, kind) not in self.edges:
            self.edges.append((source, target, kind))

    def as_json(self) -> dict:
        """Return {root, num_versions, nodes, edges}: each dataset, job... once, whatever rows show it."""
        nodes = {}
        for node in self.nodes.values():
            nodes.setdefault(node.ref, node.as_json())
        edges = []
        for source, target, kind in self.edges:
            edge = {"source": self.nodes[source].ref, "target": self.nodes[target].ref, "kind": kind}
            if edge not in edges:
                edges.append(edge)
        return {"root": self.root.pk, "num_versions": self.num_versions, "nodes": list(nodes.values()), "edges": edges}

    def svg_nodes(self) -> list[Node]:
        return list(self.nodes.values())

    def svg_edges(self) -> list[dict]:
        """Edges as SVG paths: parent -> child elbows in the tree, straight lines along a row."""
        paths = []
        for source, target, kind in self.edges:
            a, b = self.nodes[source], self.nodes[target]
            if kind == "parent":
                x0, y0 = a.x + 14, a.y + a.height
                y1 = b.y + b.height / 2
                paths.append({"kind": kind, "d": f"M{x0},{y0} V{y1} H{b.x}"})
            else:
                x0, y0 = a.x + a.width, a.y + a.height / 2
                x1, y1 = b.x, b.y + b.height / 2
                middle = (x0 + x1) / 2
                paths.append({"kind": kind, "d": f"M{x0},{y0} C{middle},{y0} {middle},{y1} {x1},{y1}"})
        return paths


def family_root(backbone: BackboneVersion, by_pk: dict[int, BackboneVersion]) -> BackboneVersion:
    """Return the upload or import that started `backbone`'s family (following parents in memory)."""
    node, seen = backbone, set()
    while node.parent_id is not None and node.parent_id in by_pk and node.pk not in seen:
        seen.add(node.pk)
        node = by_pk[node.parent_id]
    return node


def _text(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def backbone_family_graph(*, backbone: BackboneVersion) -> Graph:
    """Return the family graph of `backbone` (already scoped to the user), laid out in rows.

    Rows follow the family tree depth first (a child below its parent, indented); each row has
    the version, what made it (a job or an import), its heads, the datasets and jobs that made
    those heads, and its assemblies.
    """
    team_versions = list(
        BackboneVersion.objects.filter(team_id=backbone.team_id).only(
            "pk", "name", "version", "status", "parent_id", "origin", "created_at", "team_id"
        )
    )
    by_pk = {version.pk: version for version in team_versions}
    root = family_root(by_pk.get(backbone.pk, backbone), by_pk)
    children: dict[int, list[BackboneVersion]] = {}
    for version in sorted(team_versions, key=lambda v: (v.created_at, v.pk)):
        if version.parent_id is not None:
            children.setdefault(version.parent_id, []).append(version)
    rows: list[tuple[BackboneVersion, int]] = []
    stack = [(root, 0)]
    while stack:
        version, depth = stack.pop()
        rows.append((version, depth))
        if depth < MAX_DEPTH:
            stack.extend((child, depth + 1) for child in reversed(children.get(version.pk, [])))
    ids = [version.pk for version, _ in rows]

    head_counts = dict(
        head_versions_on_backbones(backbone_ids=ids)
        .values("backbone_id")
        .annotate(count=Count("id"))
        .values_list("backbone_id", "count")
    )
    shown_heads = (
        head_versions_on_backbones(backbone_ids=ids)
        .annotate(rank=Window(RowNumber(), partition_by=[F("backbone_id")], order_by=[F("pk").desc()]))
        .filter(rank__lte=HEADS_SHOWN)
        .values("pk", "backbone_id", "version", "status", "task__slug", "dataset_id", "origin")
        .order_by("backbone_id", "-pk")
    )
    heads_by_backbone: dict[int, list[dict]] = {}
    for head in shown_heads:
        heads_by_backbone.setdefault(head["backbone_id"], []).append(head)
    # Datasets and jobs that made any head of each version (distinct pairs; not only the shown heads).
    head_datasets: dict[int, list[int]] = {}
    for backbone_id, dataset_id in (
        head_versions_on_backbones(backbone_ids=ids)
        .filter(dataset__isnull=False)
        .values_list("backbone_id", "dataset_id")
        .distinct()
        .order_by("backbone_id", "-dataset_id")
    ):
        head_datasets.setdefault(backbone_id, []).append(dataset_id)
    head_jobs: dict[int, list[int]] = {}
    for backbone_id, job_id in (
        head_versions_on_backbones(backbone_ids=ids)
        .filter(origin__kind="job")
        .values_list("backbone_id", "origin__job")
        .distinct()
        .order_by("backbone_id")
    ):
        if isinstance(job_id, int):
            head_jobs.setdefault(backbone_id, []).append(job_id)
    assemblies: dict[int, list[tuple]] = {}
    for backbone_id, pk, name, status in (
        BackboneVersion.objects.filter(pk__in=ids, assemblies__isnull=False)
        .values_list("pk", "assemblies__id", "assemblies__name", "assemblies__status")
        .order_by("pk", "-assemblies__id")
    ):
        assemblies.setdefault(backbone_id, []).append((pk, name, status))

    made_by_jobs = {v.origin.get("job") for v, _ in rows if isinstance((v.origin or {}).get("job"), int)}
    job_ids = made_by_jobs | {job for jobs in head_jobs.values() for job in jobs[:ITEMS_SHOWN]}
    jobs = {
        job["pk"]: job
        for job in Job.objects.filter(pk__in=job_ids, team_id=backbone.team_id).values("pk", "kind", "status", "params")
    }
    job_datasets = {pk: sorted(stored_dataset_ids(job["params"])) for pk, job in jobs.items()}
    dataset_ids = {d for ds in head_datasets.values() for d in ds[:ITEMS_SHOWN]}
    dataset_ids |= {d for pk in made_by_jobs if pk in job_datasets for d in job_datasets[pk]}
    dataset_names = dict(Dataset.objects.filter(pk__in=dataset_ids, team_id=backbone.team_id).values_list("pk", "name"))
    return _layout(
        root=root,
        current=backbone,
        rows=rows,
        head_counts=head_counts,
        heads_by_backbone=heads_by_backbone,
        head_datasets=head_datasets,
        head_jobs=head_jobs,
        assemblies=assemblies,
        jobs=jobs,
        job_datasets=job_datasets,
        dataset_names=dataset_names,
    )


def _layout(*, root, current, rows, head_counts, heads_by_backbone, head_datasets, head_jobs, assemblies, jobs,
            job_datasets, dataset_names) -> Graph:  # fmt: skip
    graph = Graph(root=root, num_versions=len(rows))
    max_depth = max((depth for _, depth in rows), default=0)
    indent = min(22.0, 220.0 / max(max_depth, 1))
    tree_width = 12 + indent * max_depth + BACKBONE_WIDTH
    made_by_x = tree_width + COLUMN_GAP
    heads_x = made_by_x + MADE_BY_WIDTH * 2 + GAP + COLUMN_GAP
    sources_x = heads_x + (HEAD_WIDTH + GAP) * (HEADS_SHOWN + 1) + COLUMN_GAP
    assemblies_x = sources_x + (ITEM_WIDTH + GAP) * (ITEMS_SHOWN * 2) + COLUMN_GAP
    graph.width = assemblies_x + (ITEM_WIDTH + GAP) * (ITEMS_SHOWN + 1) + 12
    graph.height = TOP + ROW_HEIGHT * len(rows) + 8
    graph.columns = [
        {"x": 12, "title": "Backbone versions"},
        {"x": made_by_x, "title": "Made by"},
        {"x": heads_x, "title": "Head versions"},
        {"x": sources_x, "title": "Datasets and jobs of the heads"},
        {"x": assemblies_x, "title": "Assemblies"},
    ]

    def dataset_node(pk: int, x: float, y: float, row: int) -> Node:
        name = dataset_names.get(pk, f"dataset {pk}")
        return graph.add(
            Node(f"dataset:{pk}@{row}", "dataset", _text(name, 16), reverse("training:dataset_detail", args=[pk]),
                 detail=f"dataset '{name}' (#{pk})", x=x, y=y, width=ITEM_WIDTH)
        )  # fmt: skip

    def job_node(pk: int, x: float, y: float, row: int, width: float = ITEM_WIDTH) -> Node:
        job = jobs.get(pk, {})
        return graph.add(
            Node(f"job:{pk}@{row}", "job", f"job #{pk}", reverse("training:job_detail", args=[pk]),
                 detail=f"{job.get('kind', 'job')} job #{pk} ({job.get('status', 'unknown')})", x=x, y=y, width=width)
        )  # fmt: skip

    for row, (version, depth) in enumerate(rows):
        y = TOP + row * ROW_HEIGHT
        chip_y = y + (NODE_HEIGHT - CHIP_HEIGHT) / 2
        backbone_id = f"backbone:{version.pk}"
        origin = version.origin or {}
        kind = origin.get("kind") or "upload"
        graph.add(
            Node(backbone_id, "backbone", _text(f"{version.name} v{version.version}", 20),
                 reverse("backbones:detail", args=[version.pk]), detail=f"{kind} · {version.status}",
                 x=12 + indent * depth, y=y, width=BACKBONE_WIDTH, height=NODE_HEIGHT, current=version.pk == current.pk)
        )  # fmt: skip
        if version.parent_id is not None and f"backbone:{version.parent_id}" in graph.nodes:
            graph.link(f"backbone:{version.parent_id}", backbone_id, "parent")
        # What made the version: a job (grow, fine_tune; with its dataset) or an import.
        x = made_by_x
        if isinstance(origin.get("job"), int):
            made = job_node(origin["job"], x, chip_y, row, MADE_BY_WIDTH)
            graph.link(made.id, backbone_id, "made")
            for dataset_pk in job_datasets.get(origin["job"], [])[:1]:
                data = dataset_node(dataset_pk, x + MADE_BY_WIDTH + GAP, chip_y, row)
                data.width = MADE_BY_WIDTH
                graph.link(data.id, made.id, "input")
        elif kind == "import" and isinstance(origin.get("import"), int):
            made = graph.add(
                Node(f"import:{origin['import']}", "import", f"import #{origin['import']}",
                     reverse("heads:import_detail", args=[origin["import"]]), detail="split out of full models",
                     x=x, y=chip_y, width=MADE_BY_WIDTH)
            )  # fmt: skip
            graph.link(made.id, backbone_id, "made")
        # Heads: the newest few, then "+N heads".
        x = heads_x
        for head in heads_by_backbone.get(version.pk, []):
            node = graph.add(
                Node(f"head:{head['pk']}", "head", _text(f"{head['task__slug']} v{head['version']}", 15),
                     reverse("heads:detail", args=[head["pk"]]), detail=head["status"], x=x, y=chip_y, width=HEAD_WIDTH)
            )  # fmt: skip
            graph.link(backbone_id, node.id, "head")
            x += HEAD_WIDTH + GAP
        more = head_counts.get(version.pk, 0) - len(heads_by_backbone.get(version.pk, []))
        if more > 0:
            node = graph.add(
                Node(f"heads:{version.pk}", "head_group", f"+{more} heads",
                     reverse("heads:list") + f"?backbone={version.pk}", detail=f"{head_counts[version.pk]} in all",
                     x=x, y=chip_y, width=HEAD_WIDTH)
            )  # fmt: skip
            graph.link(backbone_id, node.id, "head")
        # Datasets and jobs the heads were trained with (from the "+N heads" node for heads not shown).
        x = sources_x
        group = f"heads:{version.pk}" if more > 0 else None
        shown_heads = heads_by_backbone.get(version.pk, [])
        for dataset_pk in head_datasets.get(version.pk, [])[:ITEMS_SHOWN]:
            node = dataset_node(dataset_pk, x, chip_y, row)
            sources = [f"head:{h['pk']}" for h in shown_heads if h["dataset_id"] == dataset_pk] or [group]
            for source in filter(None, sources):
                graph.link(source, node.id, "trained_on")
            x += ITEM_WIDTH + GAP
        for job_pk in head_jobs.get(version.pk, [])[:ITEMS_SHOWN]:
            node = job_node(job_pk, x, chip_y, row)
            sources = [f"head:{h['pk']}" for h in shown_heads if (h["origin"] or {}).get("job") == job_pk] or [group]
            for source in filter(None, sources):
                graph.link(source, node.id, "trained_by")
            x += ITEM_WIDTH + GAP
        # Assemblies built from the version.
        x = assemblies_x
        built = assemblies.get(version.pk, [])
        for pk, name, status in built[:ITEMS_SHOWN]:
            node = graph.add(
                Node(f"assembly:{pk}", "assembly", _text(name or f"assembly #{pk}", 16),
                     reverse("assemblies:detail", args=[pk]), detail=status, x=x, y=chip_y, width=ITEM_WIDTH)
            )  # fmt: skip
            graph.link(backbone_id, node.id, "assembly")
            x += ITEM_WIDTH + GAP
        if len(built) > ITEMS_SHOWN:
            graph.add(
                Node(f"assemblies:{version.pk}", "assembly", f"+{len(built) - ITEMS_SHOWN} more",
                     reverse("assemblies:list"), x=x, y=chip_y, width=ITEM_WIDTH)
            )  # fmt: skip
    return graph
