"""Worker side: how a changed backbone treats the heads already approved on its parent.

Each approved head of the parent that has a dataset with a validation split is evaluated
through the parent and through the new backbone (before and after). The rows are computed
before anything is registered; the ForgettingReport row is written with the job's results.
"""

from backbones.models import BackboneVersion
from backbones.work.loading import load_model_blob
from heads.selectors import head_approved_list
from training.work.common import load_dataset
from training.work.progress import JobReporter


def forgetting_rows(*, parent_version: BackboneVersion, parent_model, new_model, reporter: JobReporter) -> list[dict]:
    """Return one row per evaluated head: {head_version, task, metric, before, after, delta, num_examples}."""
    from modelhub.ml.train.evaluate import evaluate_head

    rows = []
    heads = head_approved_list(backbone=parent_version).select_related("dataset", "blob")
    for head in heads.order_by("pk"):
        if head.dataset is None or not head.dataset.num_validation:
            continue
        _, data = load_dataset(head.dataset_id, parent_version)
        model = load_model_blob(head.blob)
        before = evaluate_head(parent_model, model, data["x_val"], data["y_val"])
        after = evaluate_head(new_model, model, data["x_val"], data["y_val"])
        metric = "accuracy" if "accuracy" in before else ("mae" if "mae" in before else "loss")
        rows.append(
            {
                "head_version": head.pk,
                "task": head.task.slug,
                "metric": metric,
                "before": before[metric],
                "after": after[metric],
                "delta": after[metric] - before[metric],
                "num_examples": len(data["y_val"]),
            }
        )
        reporter.log(f"forgetting: {head.task.slug} {metric} {before[metric]:.4f} -> {after[metric]:.4f}")
    return rows
