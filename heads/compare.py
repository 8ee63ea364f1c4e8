"""Compare two head versions: summaries, metrics per shared dataset, weights, outputs.

Read on request by the API (GET /api/heads/compare/) and the dashboard's compare page. Metrics
and outputs come from HeadEvaluation rows (an evaluate_head job wrote them). Weights are read
from both heads' .keras files with h5py (modelhub.ml.compare, imported inside the function: no
TensorFlow), and only from files a worker has validated (heads.selectors.head_get_comparable):
the web process never parses bytes no worker has checked. A comparison is pairwise and
arbitrary, so nothing can be computed ahead; its result is cached per pair of blobs (sha256 a,
sha256 b) in Django's cache. Two files of at most MODELHUB_COMPARE_WEB_MAX_BYTES together are
compared in the web process; larger pairs by a worker (task heads.compare_weights), which the
request waits for at most MODELHUB_COMPARE_MAX_WAIT seconds, then answers with
``weights.computing`` true, to be asked again. Heads larger than MODELHUB_COMPARE_MAX_HEAD_BYTES
are compared by architecture only, from their stored spec.
"""

import io
import tempfile
import time
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import QuerySet

from artifacts.models import Blob
from artifacts.services import blob_fetch_verified
from core.errors import ApplicationError
from heads.models import HeadEvaluation, HeadVersion
from heads.selectors import NOT_VALIDATED_STATUSES

DEFAULT_MAX_HEAD_BYTES = 64 * 1024**2
DEFAULT_WEB_MAX_BYTES = 256 * 1024
DEFAULT_MAX_WAIT_SECONDS = 10.0
WEIGHTS_TASK = "heads.compare_weights"
# Bump when the shape or the meaning of a cached weights comparison changes.
WEIGHTS_CACHE_VERSION = 1
WEIGHTS_CACHE_SECONDS = 7 * 24 * 3600
# A pair handed to a worker is not handed again for this long (a lost task is retried after it).
WEIGHTS_PENDING_SECONDS = 300
# The API's Retry-After while a worker compares a pair.
COMPARE_RETRY_AFTER_SECONDS = 2
FIRST_POLL_SECONDS = 0.05
MAX_POLL_SECONDS = 0.5
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


def _empty_weights() -> dict:
    return {"same_architecture": None, "difference": None, "relative_l2_change": None, "layers": [], "computing": False}


def _max_head_bytes() -> int:
    return int(getattr(settings, "MODELHUB_COMPARE_MAX_HEAD_BYTES", DEFAULT_MAX_HEAD_BYTES))


def weights_cache_key(*, sha256_a: str, sha256_b: str) -> str:
    """Return the cache key of b's weight change from a, per pair of blobs (order matters)."""
    return f"heads:compare-weights:v{WEIGHTS_CACHE_VERSION}:{_max_head_bytes()}:{sha256_a}:{sha256_b}"


def weights_compare(*, a: HeadVersion, b: HeadVersion) -> dict:
    """Return b's per-layer relative L2 weight change from a, or why the architectures differ.

    Reads only validated files (a head still validating or rejected is named in ``difference``
    and never opened). Small pairs are compared here, larger ones by a worker: then
    ``computing`` is true while the worker has not answered within MODELHUB_COMPARE_MAX_WAIT.
    """
    result = _empty_weights()
    unvalidated = [
        f"{label} is '{head.status}'" for label, head in (("a", a), ("b", b)) if head.status in NOT_VALIDATED_STATUSES
    ]
    if unvalidated:
        result["difference"] = (
            f"The weights were not compared: {' and '.join(unvalidated)}; only files a worker has validated are read."
        )
        return result
    limit = _max_head_bytes()
    if max(a.blob.size_bytes, b.blob.size_bytes) > limit:
        same = _layer_signature(a) == _layer_signature(b)
        result["same_architecture"] = same
        result["difference"] = (
            f"The weights were not compared: a head file is larger than {limit} bytes "
            "(MODELHUB_COMPARE_MAX_HEAD_BYTES)."
            + ("" if same else f" The layers differ: {_layer_summary(a)} in a, {_layer_summary(b)} in b.")
        )
        return result
    key = weights_cache_key(sha256_a=a.blob.sha256, sha256_b=b.blob.sha256)
    cached = cache.get(key)
    if cached is not None:
        return cached
    total = a.blob.size_bytes + b.blob.size_bytes
    web_max = int(getattr(settings, "MODELHUB_COMPARE_WEB_MAX_BYTES", DEFAULT_WEB_MAX_BYTES))
    if total <= web_max:
        compared = weights_compare_blobs(blob_a=a.blob, blob_b=b.blob)
        cache.set(key, compared, WEIGHTS_CACHE_SECONDS)
        return compared
    if cache.add(f"{key}:pending", True, WEIGHTS_PENDING_SECONDS):
        from modelhub.celery import app

        transaction.on_commit(lambda: app.send_task(WEIGHTS_TASK, args=[a.pk, b.pk]))
    wait = float(getattr(settings, "MODELHUB_COMPARE_MAX_WAIT", DEFAULT_MAX_WAIT_SECONDS))
    cached = _cache_wait(key, seconds=wait)
    if cached is not None:
        return cached
    result["computing"] = True
    result["difference"] = (
        f"A worker is comparing the weights (the two head files hold {total} bytes together, more than the "
        f"{web_max} the web process reads: MODELHUB_COMPARE_WEB_MAX_BYTES). Ask again in a few seconds."
    )
    return result


def _cache_wait(key: str, *, seconds: float) -> dict | None:
    """Poll the cache for `key` for at most `seconds` (every 50 ms, then less often up to 0.5 s)."""
    deadline = time.monotonic() + max(0.0, seconds)
    interval = FIRST_POLL_SECONDS
    while True:
        value = cache.get(key)
        left = deadline - time.monotonic()
        if value is not None or left <= 0:
            return value
        time.sleep(min(interval, left))
        interval = min(interval * 2, MAX_POLL_SECONDS)


def weights_compare_blobs(*, blob_a: Blob, blob_b: Blob) -> dict:
    """Compare two validated head files' weights (b's change from a); read failures go in ``difference``.

    A file the reader refuses is a property of its bytes (cached like a result); a blob whose
    stored bytes fail their checksum raises ChecksumMismatchError (not cached: it can be repaired).
    """
    from modelhub.ml.compare import compare_head_weights
    from modelhub.ml.errors import MLError

    result = _empty_weights()
    with tempfile.TemporaryDirectory(prefix="modelhub-compare-") as tmp:
        path_a = blob_fetch_verified(blob=blob_a, destination=Path(tmp) / "a.keras")
        path_b = blob_fetch_verified(blob=blob_b, destination=Path(tmp) / "b.keras")
        try:
            compared = compare_head_weights(path_a, path_b, max_bytes=_max_head_bytes())
        except MLError as exc:
            result["difference"] = f"The weights could not be read: {exc}"
            return result
    result.update(compared)
    return result


def weights_compare_run(*, head_a_id: int, head_b_id: int) -> None:
    """Worker side of weights_compare: compare two validated heads' files and cache the result.

    Fetches the rows again and reads nothing unless both are still validated (a head may have
    been rejected since the request); always clears the pair's pending marker.
    """
    heads = {head.pk: head for head in HeadVersion.objects.select_related("blob").filter(pk__in=[head_a_id, head_b_id])}
    a, b = heads.get(head_a_id), heads.get(head_b_id)
    if a is None or b is None:
        return
    key = weights_cache_key(sha256_a=a.blob.sha256, sha256_b=b.blob.sha256)
    try:
        if a.status in NOT_VALIDATED_STATUSES or b.status in NOT_VALIDATED_STATUSES:
            return
        if max(a.blob.size_bytes, b.blob.size_bytes) > _max_head_bytes():
            return
        try:
            cache.set(key, weights_compare_blobs(blob_a=a.blob, blob_b=b.blob), WEIGHTS_CACHE_SECONDS)
        except ApplicationError as exc:  # a damaged stored blob: say so for a while, then try again
            cache.set(key, {**_empty_weights(), "difference": f"The weights could not be read: {exc}"}, 60)
    finally:
        cache.delete(f"{key}:pending")


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
    from dashboard.kit import line_chart

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
