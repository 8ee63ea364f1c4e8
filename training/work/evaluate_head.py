"""Worker side: evaluate_head jobs: a head version's metrics on a dataset, through its backbone.

The rows evaluated are the dataset's validation split, or all of it when it has none. The
head's outputs on those rows (the first MODELHUB_EVALUATION_MAX_OUTPUT_VALUES values) are
stored as an .npz blob beside the metrics, so two head versions evaluated on the same dataset
can be compared row by row later (heads.compare) without a worker.
"""

import io

import numpy as np
from django.conf import settings

from artifacts.services import blob_store_bytes
from backbones.work.loading import load_model_blob
from heads.models import HeadEvaluation
from heads.selectors import head_versions_by_id
from training.models import Job
from training.specs import EvaluateHeadSpec
from training.work.common import feature_cache_dir, finish_succeeded, load_dataset, load_frozen_backbone
from training.work.inputs import num_examples
from training.work.progress import JobReporter, steps_per_epoch

OUTPUTS_ARRAY = "outputs"
# At most this many output values (rows x width, float32) are kept per evaluation, the first rows
# first (setting MODELHUB_EVALUATION_MAX_OUTPUT_VALUES; 4,000,000 values = 16 MB).
DEFAULT_MAX_OUTPUT_VALUES = 4_000_000


def outputs_npz(outputs: np.ndarray, *, max_values: int) -> tuple[bytes, int]:
    """Return the first rows of ``outputs`` (at most ``max_values`` values) as .npz bytes, and their count."""
    outputs = np.asarray(outputs).reshape(len(outputs), -1)  # a head may output [rows] or [rows, ...]
    width = max(int(outputs.shape[1]), 1)
    num_rows = min(len(outputs), max(max_values // width, 0))
    buffer = io.BytesIO()
    np.savez(buffer, **{OUTPUTS_ARRAY: np.ascontiguousarray(outputs[:num_rows], dtype=np.float32)})
    return buffer.getvalue(), num_rows


def max_output_values() -> int:
    """The most output values one evaluation keeps (MODELHUB_EVALUATION_MAX_OUTPUT_VALUES)."""
    return int(getattr(settings, "MODELHUB_EVALUATION_MAX_OUTPUT_VALUES", DEFAULT_MAX_OUTPUT_VALUES))


def run_evaluate_head(job: Job, spec: EvaluateHeadSpec) -> dict:
    """Evaluate the head, store its outputs, then record the evaluation with the job's success."""
    from modelhub.ml.train.evaluate import evaluate_head_outputs

    head = head_versions_by_id(ids=[spec.head]).select_related("blob").get()
    backbone_version, backbone = load_frozen_backbone(head.backbone_id)
    dataset, data = load_dataset(spec.dataset, backbone_version)
    split = "validation" if "x_val" in data else "all"
    x, y = (data["x_val"], data["y_val"]) if split == "validation" else (data["x"], data["y"])
    reporter = JobReporter(job, epochs=1, steps_per_epoch=steps_per_epoch(num_examples(x), spec.batch_size))
    reporter.log(
        f"evaluating head '{head.task.slug}' v{head.version} on {num_examples(x)} rows ({split}) of dataset "
        f"'{dataset.name}', backbone {backbone_version.label}"
    )
    model = load_model_blob(head.blob)
    metrics, outputs = evaluate_head_outputs(
        backbone, model, x, y, batch_size=spec.batch_size, cache_dir=feature_cache_dir()
    )
    data_bytes, num_rows = outputs_npz(outputs, max_values=max_output_values())
    stored = blob_store_bytes(data=data_bytes).blob
    reporter.on_epoch({key: value for key, value in metrics.items() if key != "num_examples"}, phase="evaluate")

    def register() -> dict:
        evaluation = HeadEvaluation(
            head=head,
            dataset=dataset,
            backbone=backbone_version,
            split=split,
            num_examples=num_examples(x),
            metrics=metrics,
            outputs=stored,
            num_output_rows=num_rows,
            job=job,
        )
        evaluation.full_clean()
        evaluation.save()
        return {"evaluation": evaluation.pk, "head_version": head.pk, "split": split, "metrics": metrics}

    return finish_succeeded(job, register)
