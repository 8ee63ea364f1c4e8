"""Compare two head versions: summaries, metrics per shared dataset, weights, outputs.

Read on request by the API (GET /api/heads/compare/) and the dashboard's compare page. Metrics
and outputs come from HeadEvaluation rows (an evaluate_head job wrote them). Weights are read
here, in the web process, from both heads' .keras files with h5py (modelhub.ml.compare, imported
inside the function: no TensorFlow): a comparison is pairwise and arbitrary, so nothing can be
computed ahead for it, and heads are small (heads larger than MODELHUB_COMPARE_MAX_HEAD_BYTES
are compared by architecture only, from their stored spec).
"""

import io
import tempfile
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db.models import QuerySet

from heads.models import HeadEvaluation, HeadVersion
from modelhub.artifacts.services import blob_fetch_verified

DEFAULT_MAX_HEAD_BYTES = 64 * 1024**2
OUTPUTS_ARRAY = "outputs"


def evaluation_list(*, heads: list[HeadVersion]) -> QuerySet[HeadEvaluation]:
    """Return the evaluations of `heads` (already scoped to the user), newest first."""
    return (
        HeadEvaluation.objects.filter(head__in=heads)
        .select_related("dataset", "backbone", "outputs")
        .order_by("-created_at", "-id")
    )


def latest_evaluations(evaluations) -> dict[tuple[int, int], HeadEvaluation]:
    """Return the newest evaluation per (head id, dataset id) from evaluations ordered newest first."""
    latest: dict[tuple[int, int], HeadEvaluation] = {}
    for evaluation in evaluations:
        latest.setdefault((evaluation.head_id, evaluation.dataset_id), evaluation)
    return latest


def head_summary(head: HeadVersion) -> dict:
    """Return what the compare answer says about one head version."""
    return {
        "id": head.pk,
        "task": head.task.slug,
        "version": head.version,
        "status": head.status,
        "backbone": head.backbone_id,
        "backbone_name": head.backbone.name,
        "backbone_version": head.backbone.version,
        "output_width": head.output_width,
        "labels": list(head.labels or []),
        "description": head.description,
        "metrics": {key: value for key, value in (head.metrics or {}).items() if key != "history"},
        "url": f"/heads/{head.pk}/",
    }


def _evaluation_side(evaluation: HeadEvaluation) -> dict:
    return {
        "evaluation": evaluation.pk,
        "backbone": evaluation.backbone_id,
        "job": evaluation.job_id,
        "metrics": evaluation.metrics,
        "created_at": evaluation.created_at,
    }


def head_compare(*, a: HeadVersion, b: HeadVersion) -> dict:
    """Compare head versions `a` and `b` (both already scoped to the user: heads.selectors.head_get).

    Returns:
        ``{"a", "b", "metrics", "weights", "outputs"}``: summaries; one row per dataset both
        were evaluated on (their newest evaluations side by side, with b - a per metric);
        per-layer relative L2 change of b's weights from a's when the architectures match,
        else the difference; and the outputs' agreement on the newest shared dataset (or None).
    """
    latest = latest_evaluations(evaluation_list(heads=[a, b]))
    shared = [
        (evaluation_a, latest[(b.pk, dataset_id)])
        for (head_id, dataset_id), evaluation_a in latest.items()
        if head_id == a.pk and (b.pk, dataset_id) in latest
    ]
    shared.sort(key=lambda pair: max(pair[0].created_at, pair[1].created_at), reverse=True)
    metrics = []
    for evaluation_a, evaluation_b in shared:
        names = sorted(set(evaluation_a.metrics) | set(evaluation_b.metrics))
        metrics.append(
            {
                "dataset": evaluation_a.dataset_id,
                "dataset_name": evaluation_a.dataset.name,
                "split": evaluation_a.split,
                "num_examples": evaluation_a.num_examples,
                "a": _evaluation_side(evaluation_a),
                "b": _evaluation_side(evaluation_b),
                "delta": {
                    name: evaluation_b.metrics[name] - evaluation_a.metrics[name]
                    for name in names
                    if _is_number(evaluation_a.metrics.get(name)) and _is_number(evaluation_b.metrics.get(name))
                },
            }
        )
    return {
        "a": head_summary(a),
        "b": head_summary(b),
        "metrics": metrics,
        "weights": weights_compare(a=a, b=b),
        "outputs": outputs_compare(shared[0]) if shared else None,
    }


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def weights_compare(*, a: HeadVersion, b: HeadVersion) -> dict:
    """Return b's per-layer relative L2 weight change from a, or why the architectures differ."""
    from modelhub.ml.compare import compare_head_weights
    from modelhub.ml.errors import MLError

    result = {"same_architecture": None, "difference": None, "relative_l2_change": None, "layers": []}
    limit = int(getattr(settings, "MODELHUB_COMPARE_MAX_HEAD_BYTES", DEFAULT_MAX_HEAD_BYTES))
    if max(a.blob.size_bytes, b.blob.size_bytes) > limit:
        same = _layer_signature(a) == _layer_signature(b)
        result["same_architecture"] = same
        result["difference"] = (
            f"The weights were not compared: a head file is larger than {limit} bytes "
            "(MODELHUB_COMPARE_MAX_HEAD_BYTES)."
            + ("" if same else f" The layers differ: {_layer_summary(a)} in a, {_layer_summary(b)} in b.")
        )
        return result
    with tempfile.TemporaryDirectory(prefix="modelhub-compare-") as tmp:
        path_a = blob_fetch_verified(blob=a.blob, destination=Path(tmp) / "a.keras")
        path_b = blob_fetch_verified(blob=b.blob, destination=Path(tmp) / "b.keras")
        try:
            compared = compare_head_weights(path_a, path_b, max_bytes=limit)
        except MLError as exc:
            result["difference"] = f"The weights could not be read: {exc}"
            return result
    result.update(compared)
    return result


def _layer_signature(head: HeadVersion) -> list:
    return [(layer.get("type"), layer.get("params")) for layer in (head.spec or {}).get("layers", [])]


def _layer_summary(head: HeadVersion) -> str:
    return ", ".join(f"{kind} ({params} params)" for kind, params in _layer_signature(head)) or "no layers known"


def evaluation_outputs(evaluation: HeadEvaluation) -> np.ndarray | None:
    """Return the outputs an evaluation stored ([rows, width] float32), or None when it has none."""
    if evaluation.outputs is None:
        return None
    with tempfile.TemporaryDirectory(prefix="modelhub-outputs-") as tmp:
        path = blob_fetch_verified(blob=evaluation.outputs, destination=Path(tmp) / "outputs.npz")
        with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as data:
            return np.asarray(data[OUTPUTS_ARRAY])


def outputs_compare(pair: tuple[HeadEvaluation, HeadEvaluation]) -> dict | None:
    """Compare two evaluations' stored outputs on the same dataset's rows, or None without outputs."""
    from modelhub.ml.compare import compare_outputs

    evaluation_a, evaluation_b = pair
    outputs_a, outputs_b = evaluation_outputs(evaluation_a), evaluation_outputs(evaluation_b)
    if outputs_a is None or outputs_b is None:
        return None
    return {
        "dataset": evaluation_a.dataset_id,
        "dataset_name": evaluation_a.dataset.name,
        "split": evaluation_a.split,
        **compare_outputs(outputs_a, outputs_b),
    }


def task_metric_charts(*, versions: list[HeadVersion]) -> list:
    """Return one line chart per metric across `versions` of a task (x: version, one line per dataset).

    Each point is the version's newest evaluation on that dataset (HeadEvaluation).
    """
    from modelhub.dashboard.charts import line_chart

    versions = sorted(versions, key=lambda head: head.version)
    position = {head.pk: index for index, head in enumerate(versions)}
    latest = latest_evaluations(evaluation_list(heads=versions))
    series: dict[str, dict[str, list]] = {}  # metric -> dataset name -> points
    for (head_id, _), evaluation in latest.items():
        for name, value in evaluation.metrics.items():
            if name != "num_examples" and _is_number(value):
                label = f"{evaluation.dataset.name} (#{evaluation.dataset_id})"
                series.setdefault(name, {}).setdefault(label, []).append((position[head_id], float(value)))
    labels = [f"v{head.version}" for head in versions]
    return [
        line_chart(
            title=metric,
            x_labels=labels,
            series=[{"name": name, "points": points} for name, points in sorted(series[metric].items())],
        )
        for metric in sorted(series)
    ]


def card_diff(*, a: HeadVersion, b: HeadVersion) -> dict:
    """Return the model cards of a and b side by side: description lines, labels, layers, metrics."""
    import difflib

    description = [
        {"kind": {"+": "added", "-": "removed", " ": "same"}[line[0]], "text": line[2:]}
        for line in difflib.ndiff((a.description or "").splitlines(), (b.description or "").splitlines())
        if line[:1] in "+- "
    ]
    labels_a, labels_b = list(a.labels or []), list(b.labels or [])
    labels = [
        {
            "index": index,
            "a": labels_a[index] if index < len(labels_a) else None,
            "b": labels_b[index] if index < len(labels_b) else None,
        }
        for index in range(max(len(labels_a), len(labels_b)))
    ]
    layers_a, layers_b = (a.spec or {}).get("layers", []), (b.spec or {}).get("layers", [])
    layers = []
    for index in range(max(len(layers_a), len(layers_b))):
        left = layers_a[index] if index < len(layers_a) else None
        right = layers_b[index] if index < len(layers_b) else None
        layers.append({"a": left, "b": right, "changed": _layer_shape(left) != _layer_shape(right)})
    metrics_a = {k: v for k, v in (a.metrics or {}).items() if k != "history"}
    metrics_b = {k: v for k, v in (b.metrics or {}).items() if k != "history"}
    metrics = [
        {"name": name, "a": metrics_a.get(name), "b": metrics_b.get(name)}
        for name in sorted(set(metrics_a) | set(metrics_b))
    ]
    for row in labels + metrics:
        row["changed"] = row["a"] != row["b"]
    return {
        "description": description,
        "description_changed": any(row["kind"] != "same" for row in description),
        "labels": labels,
        "layers": layers,
        "metrics": metrics,
        "output_width": (a.output_width, b.output_width),
    }


def _layer_shape(layer: dict | None) -> tuple | None:
    return (layer.get("type"), layer.get("params")) if layer else None
