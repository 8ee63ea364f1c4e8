"""A backbone's layer stack as a server-side SVG, with the points where heads branch off marked.

Issue 10 (trunk and branches): a head version may own the top of its backbone, from just after
a branch point up to the feature layer. The backbone page draws the stack of its layers top
(inputs) to bottom (features): each branch point in use is a marked row labelled with the heads
branching there, and a lane beside the stack runs from it down to the features, over the layers
each of those branches owns. Long runs of layers between the rows worth showing collapse into
one "… N layers" row, so a 150-layer backbone stays a page tall. No script (the dashboard's CSP
forbids inline scripts): this module computes the geometry, templates/backbones/_branch_diagram.html
writes the SVG (autoescaped).
"""

from dataclasses import dataclass, field

from django.urls import reverse

# Backbones with at most this many layers are drawn whole; longer ones collapse runs of layers.
FULL_STACK_MAX_LAYERS = 24
# A run of at most this many layers between shown rows is drawn rather than collapsed.
MAX_RUN_SHOWN = 2

# Layout (SVG user units; 11px text, monospace chips: CHAR_WIDTH per character).
STACK_X = 12
TOP = 12
STACK_WIDTH = 300
BOX_HEIGHT = 20
ROW_HEIGHT = 24
POINT_ROW_HEIGHT = 48
LANE_GAP = 10
LABEL_GAP = 12
CHIP_HEIGHT = 18
CHIP_GAP = 6
CHAR_WIDTH = 6.6
MIN_WIDTH = 640
MAX_NAME_CHARS = 30
MAX_TYPE_CHARS = 16


@dataclass
class Chip:
    """A linked label in a point's row: one head version, or "+N more"."""

    label: str
    url: str
    x: float
    y: float
    width: float
    head_id: int | None = None

    @property
    def text_x(self) -> float:
        return self.x + 6

    @property
    def text_y(self) -> float:
        return self.y + CHIP_HEIGHT / 2


@dataclass
class Row:
    """One row of the stack: a layer, a branch point (a layer with heads), or a collapsed run."""

    kind: str  # layer | point | elided
    y: float
    height: float
    label: str
    detail: str = ""
    title: str = ""
    layer: str = ""
    index: int = 0
    num_layers: int = 1
    num_possible: int = 0
    possible: bool = False
    feature: bool = False
    # Point rows only.
    lane_x: float = 0
    caption: str = ""
    num_heads: int = 0
    chips: list[Chip] = field(default_factory=list)

    @property
    def box_y(self) -> float:
        return self.y + (ROW_HEIGHT - BOX_HEIGHT) / 2

    @property
    def middle(self) -> float:
        return self.box_y + BOX_HEIGHT / 2


@dataclass
class LayerStack:
    """The diagram's geometry in a ``width`` x ``height`` viewBox."""

    width: float
    height: float
    rows: list[Row]
    lanes: list[dict]
    unplaced: list[dict]
    num_layers: int
    num_points: int
    stack_x: float = STACK_X
    stack_width: float = STACK_WIDTH
    label_x: float = 0
    num_collapsed: int = 0

    @property
    def stack_right(self) -> float:
        return self.stack_x + self.stack_width

    @property
    def name_x(self) -> float:
        return self.stack_x + 8

    @property
    def type_x(self) -> float:
        return self.stack_right - 8


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _place(point_layer: str, index_of: dict[str, int], index_of_leaf: dict[str, int]) -> int | None:
    """Return the stack index of a branch point: by name, else by the last part of a nested path."""
    if point_layer in index_of:
        return index_of[point_layer]
    return index_of_leaf.get(point_layer.rsplit("/", 1)[-1])


def _kept_indices(num_layers: int, always: set[int]) -> list[int]:
    """Return the layer indices drawn as rows; the others collapse into runs."""
    if num_layers <= FULL_STACK_MAX_LAYERS:
        return list(range(num_layers))
    kept = sorted(index for index in always if 0 <= index < num_layers)
    filled = []
    for previous, index in zip([-1, *kept[:-1]], kept, strict=True):
        if 0 < index - previous - 1 <= MAX_RUN_SHOWN:
            filled.extend(range(previous + 1, index))
        filled.append(index)
    return filled


def layer_stack(
    *,
    layers: list[dict],
    feature_layer: str = "",
    points: list[dict],
    possible: list[str] | None = None,
    more_url: str = "",
) -> LayerStack:
    """Return the geometry of a backbone's layer stack with its branch points marked.

    Args:
        layers: the backbone's layers in graph order, ``[{"name", "type", "params"}]`` (its spec).
        feature_layer: the layer whose output is the features (the last layer when blank).
        points: the branch points in use, ``[{"layer", "num_heads", "params", "num_layers",
            "heads"}]`` (backbones.selectors.backbone_branches); ``heads`` are head versions.
        possible: every layer a head could branch after (a worker's answer), or None if unknown.
        more_url: where "+N more" heads link to.

    Returns:
        A :class:`LayerStack`. Points whose layer is not in ``layers`` are in ``unplaced``.

    Example:
        >>> layer_stack(layers=[{"name": "a", "type": "Dense", "params": 3}], points=[]).num_layers
        1
    """
    names = [layer.get("name", "") for layer in layers]
    index_of = {name: index for index, name in reversed(list(enumerate(names)))}
    index_of_leaf = {name.rsplit("/", 1)[-1]: index for index, name in reversed(list(enumerate(names)))}
    feature_index = index_of.get(feature_layer, len(layers) - 1) if layers else -1
    possible_indices = {index_of[name] for name in possible or [] if name in index_of}

    points_at: dict[int, dict] = {}
    unplaced = []
    for point in points:
        index = _place(point["layer"], index_of, index_of_leaf)
        if index is None or index in points_at:
            unplaced.append(point)
        else:
            points_at[index] = point

    kept = _kept_indices(len(layers), {0, len(layers) - 1, feature_index, *points_at})
    num_lanes = len(points_at)
    lane_x0 = STACK_X + STACK_WIDTH + LABEL_GAP
    label_x = lane_x0 + num_lanes * LANE_GAP + LABEL_GAP
    rows: list[Row] = []
    y = TOP
    width = MIN_WIDTH
    previous = -1
    point_order = sorted(points_at)
    for index in kept:
        if index - previous > 1:
            start, end = previous + 1, index - 1
            run = range(start, end + 1)
            num_possible = len(possible_indices.intersection(run))
            detail = f" · {_count(num_possible, 'possible branch point')}" if possible is not None else ""
            params = sum(int(layers[i].get("params") or 0) for i in run)
            rows.append(
                Row(
                    kind="elided",
                    y=y,
                    height=ROW_HEIGHT,
                    label=f"… {len(run)} layers{detail}",
                    title=f"Layers {start}–{end}: {names[start]} … {names[end]} ({params:,} params)",
                    index=start,
                    num_layers=len(run),
                    num_possible=num_possible,
                )
            )
            y += ROW_HEIGHT
        layer = layers[index]
        name = names[index]
        row = Row(
            kind="point" if index in points_at else "layer",
            y=y,
            height=POINT_ROW_HEIGHT if index in points_at else ROW_HEIGHT,
            label=_truncate(name, MAX_NAME_CHARS),
            detail="features" if index == feature_index else _truncate(str(layer.get("type", "")), MAX_TYPE_CHARS),
            title=f"{index}: {name} ({layer.get('type', '')}, {int(layer.get('params') or 0):,} params)",
            layer=name,
            index=index,
            possible=index in possible_indices,
            feature=index == feature_index,
        )
        if index in points_at:
            point = points_at[index]
            rank = point_order.index(index)
            # Shallower points take the outer lanes, so a deeper point's lane never crosses them.
            row.lane_x = lane_x0 + (num_lanes - 1 - rank) * LANE_GAP + LANE_GAP / 2
            row.num_heads = point["num_heads"]
            row.caption = (
                f"after {name} · {_count(point['num_layers'], 'layer')}, {point['params']:,} params · "
                f"{_count(point['num_heads'], 'head')}"
            )
            row.chips = _chips(point, x=label_x, y=row.box_y + BOX_HEIGHT + 4, more_url=more_url)
            right = max([label_x + len(row.caption) * CHAR_WIDTH, *(chip.x + chip.width for chip in row.chips)])
            width = max(width, right + STACK_X)
        rows.append(row)
        y += row.height
        previous = index

    feature_row = next((row for row in rows if row.feature), rows[-1] if rows else None)
    right = STACK_X + STACK_WIDTH
    lanes = [
        {
            "layer": row.layer,
            "d": f"M{right},{row.middle} H{row.lane_x} V{feature_row.middle} H{right}",
            "label_d": f"M{row.lane_x},{row.middle} H{label_x - 4}",
        }
        for row in rows
        if row.kind == "point" and feature_row is not None
    ]
    return LayerStack(
        width=round(width),
        height=round(y + TOP),
        rows=rows,
        lanes=lanes,
        unplaced=unplaced,
        num_layers=len(layers),
        num_points=len(points),
        label_x=label_x,
        num_collapsed=sum(row.num_layers for row in rows if row.kind == "elided"),
    )


def _chips(point: dict, *, x: float, y: float, more_url: str) -> list[Chip]:
    """Lay the point's heads out left to right as linked chips, then "+N more"."""
    chips = []
    for head in point["heads"]:
        label = f"{head.task.slug} v{head.version}"
        chip = Chip(label, reverse("heads:detail", args=[head.pk]), x, y, len(label) * CHAR_WIDTH + 12, head.pk)
        chips.append(chip)
        x += chip.width + CHIP_GAP
    hidden = point["num_heads"] - len(point["heads"])
    if hidden > 0:
        label = f"+{hidden:,} more"
        chips.append(Chip(label, more_url, x, y, len(label) * CHAR_WIDTH + 12))
    return chips
