"""Server-side SVG charts: the geometry of a line chart, for a template to draw.

The dashboard's Content-Security-Policy forbids inline scripts and no CDN is used, so charts
that need no live updates are drawn on the server: this module turns series of numbers into
coordinates, tick labels and colours; templates/dashboard/_line_chart.html writes the SVG
(autoescaped).
"""

from dataclasses import dataclass, field

PALETTE = ("#4f46e5", "#059669", "#d97706", "#dc2626", "#0891b2", "#7c3aed", "#db2777", "#65a30d")
NUM_Y_TICKS = 4


@dataclass
class LineChart:
    """A line chart's geometry in a ``width`` x ``height`` viewBox."""

    title: str
    width: int
    height: int
    left: int
    top: int
    right: int
    bottom: int
    x_ticks: list[dict] = field(default_factory=list)
    y_ticks: list[dict] = field(default_factory=list)
    lines: list[dict] = field(default_factory=list)


def _format(value: float) -> str:
    return f"{value:.3g}"


def line_chart(
    *, title: str, x_labels: list[str], series: list[dict], width: int = 560, height: int = 220
) -> LineChart:
    """Return the geometry of a line chart with categorical x and numeric y.

    Args:
        title: what the chart shows (e.g. the metric's name).
        x_labels: one label per x position, left to right (e.g. "v1", "v2").
        series: ``[{"name", "points": [(x index, y value), ...], "url"?}]``; gaps are allowed.

    Returns:
        A :class:`LineChart`: ticks as ``{"x"|"y", "label"}``, lines as ``{"name", "color",
        "points": "x,y x,y", "dots": [{"x", "y", "title"}]}``.

    Example:
        >>> line_chart(title="accuracy", x_labels=["v1", "v2"], series=[{"name": "val", "points": [(0, .5)]}])
    """
    chart = LineChart(title=title, width=width, height=height, left=48, top=14, right=width - 14, bottom=height - 30)
    values = [value for line in series for _, value in line["points"]]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high - low < 1e-12:
        low, high = low - 0.5 if low else -0.5, high + 0.5 if high else 0.5
    margin = (high - low) * 0.08
    low, high = low - margin, high + margin
    num_x = max(len(x_labels), 1)

    def x_of(index: int) -> float:
        if num_x == 1:
            return (chart.left + chart.right) / 2
        return chart.left + (chart.right - chart.left) * index / (num_x - 1)

    def y_of(value: float) -> float:
        return chart.bottom - (chart.bottom - chart.top) * (value - low) / (high - low)

    step = max(1, -(-num_x // 12))  # at most ~12 x labels
    chart.x_ticks = [
        {"x": round(x_of(i), 1), "label": label} for i, label in enumerate(x_labels) if i % step == 0 or i == num_x - 1
    ]
    tick_values = [low + (high - low) * k / NUM_Y_TICKS for k in range(NUM_Y_TICKS + 1)]
    chart.y_ticks = [{"y": round(y_of(value), 1), "label": _format(value)} for value in tick_values]
    for number, line in enumerate(series):
        points = sorted(line["points"])
        coordinates = [(round(x_of(i), 1), round(y_of(v), 1)) for i, v in points]
        chart.lines.append(
            {
                "name": line["name"],
                "color": PALETTE[number % len(PALETTE)],
                "points": " ".join(f"{x},{y}" for x, y in coordinates),
                "dots": [
                    {"x": x, "y": y, "title": f"{line['name']} · {x_labels[i]}: {_format(v)}"}
                    for (x, y), (i, v) in zip(coordinates, points, strict=True)
                ],
            }
        )
    return chart
