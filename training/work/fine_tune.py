"""Worker side: fine_tune jobs.

With ``output`` "backbone" (the default): a new backbone version, a head on it, and a
forgetting report for the parent's approved heads. With "branch": one head version on the
parent backbone that owns the tuned top layers as its branch; the shared trunk does not
change, so there is no backbone version and no forgetting report.
"""

import tempfile
from pathlib import Path

from backbones.work.loading import fetch_blob_to
from training.models import ForgettingReport, Job
from training.specs import FineTuneSpec
from training.work.common import (
    backbone_artifact,
    branch_artifact,
    build_head,
    feature_cache_dir,
    finish_succeeded,
    head_artifact,
    load_dataset,
    load_frozen_backbone,
    register_backbone,
    register_head,
    sized_head,
)
from training.work.forgetting import forgetting_rows
from training.work.inputs import first_rows, num_examples
from training.work.progress import JobReporter, steps_per_epoch

# The library tags each epoch's metrics with its phase; the job shows these names.
PHASES = {"phase1": "warmup", "phase2": "finetune"}
# Dataset rows the branch is checked on against the tuned model (cheap: one forward pass).
NUM_PROBE_ROWS = 8


def run_fine_tune(job: Job, spec: FineTuneSpec) -> dict:
    """Warm up a head, fine-tune the top layers, store the models (and report), then register."""
    with tempfile.TemporaryDirectory(prefix="modelhub-fine-tune-") as tmp:
        return _run(job, spec, Path(tmp))


def _run(job: Job, spec: FineTuneSpec, tmp: Path) -> dict:
    from modelhub.ml.branches import fine_tune_branch_point
    from modelhub.ml.train.backbone import fine_tune
    from modelhub.ml.train.evaluate import evaluate_head
    from modelhub.ml.train.model import make_trainable

    parent_version, parent_model = load_frozen_backbone(spec.backbone)
    parent_path = None
    if spec.output == "branch":  # fail before training when the top layers cannot become a branch
        parent_path = fetch_blob_to(parent_version.blob, tmp, "parent.keras")
        point = fine_tune_branch_point(parent_path, parent_model, spec.unfreeze_top)
        branch_note = f"; the branch will start after '{point}'"
    else:
        branch_note = ""
    dataset, data = load_dataset(spec.dataset, parent_version)
    head_spec = sized_head(spec.head, dataset, data["y"])
    reporter = JobReporter(
        job,
        epochs=spec.warmup_epochs + spec.epochs,
        steps_per_epoch=steps_per_epoch(num_examples(data["x"]), spec.batch_size),
    )
    head = build_head(head_spec, parent_model, name=spec.task, seed=spec.seed)
    reporter.log(
        f"fine-tuning: {spec.warmup_epochs} warm-up epochs, then {spec.epochs} with the top {spec.unfreeze_top} layers"
        f" (output: {spec.output}{branch_note})"
    )
    by_phase = {name: reporter.epoch_callback(phase=shown) for name, shown in PHASES.items()}
    result = fine_tune(
        backbone=parent_model,
        head=head,
        x=data["x"],
        y=data["y"],
        phase1_epochs=spec.warmup_epochs,
        phase2_epochs=spec.epochs,
        unfreeze_layers=spec.unfreeze_top,
        learning_rate=spec.learning_rate,
        phase2_lr_factor=spec.finetune_lr_factor,
        batch_size=spec.batch_size,
        cache_dir=feature_cache_dir(),
        seed=spec.seed,
        progress=lambda metrics: by_phase[metrics["phase"]](metrics),
        should_cancel=reporter.should_cancel,
    )
    new_model = result["backbone"]
    make_trainable(new_model)
    metrics = reporter.final_metrics()
    if "x_val" in data:
        scores = evaluate_head(new_model, head, data["x_val"], data["y_val"])
        metrics.update({f"val_{k}": v for k, v in scores.items() if k != "num_examples"})
    if spec.output == "branch":
        return _finish_as_branch(
            job, spec, parent_version=parent_version, parent_path=parent_path, parent_model=parent_model,
            result=result, data=data, dataset=dataset, metrics=metrics, reporter=reporter,
        )  # fmt: skip
    stored_backbone = backbone_artifact(new_model, name=parent_version.name)
    stored_head = head_artifact(head, name=spec.task)
    rows = forgetting_rows(
        parent_version=parent_version, parent_model=parent_model, new_model=new_model, reporter=reporter
    )

    def register() -> dict:
        new_version = register_backbone(
            job,
            stored=stored_backbone,
            parent=parent_version,
            origin={"kind": "fine_tune", "unfreeze_top": spec.unfreeze_top},
        )
        head_version = register_head(
            job, task_slug=spec.task, stored=stored_head, backbone_version=new_version, dataset=dataset, metrics=metrics
        )
        report = ForgettingReport.objects.create(job=job, parent=parent_version, backbone=new_version, rows=rows)
        return {"backbone_version": new_version.pk, "head_versions": [head_version.pk], "forgetting_report": report.pk}

    return finish_succeeded(job, register)


def _finish_as_branch(
    job: Job, spec: FineTuneSpec, *, parent_version, parent_path, parent_model, result, data, dataset, metrics, reporter
) -> dict:
    """Cut the tuned top out as a branch, check it against the tuned model, register the head on the parent."""
    from modelhub.ml.branches import branch_from_fine_tune

    trained = result["unfreeze"]["unfrozen_layers"]
    branch, info, verification = branch_from_fine_tune(
        parent_path=parent_path,
        parent=parent_model,
        tuned=result["backbone"],
        head=result["head"],
        trained_layers=trained,
        name=f"{spec.task}_branch",
        probe=first_rows(data["x"], NUM_PROBE_ROWS),
    )
    reporter.log(
        f"branch after '{info.after_layer}': {len(info.layers)} layers, {info.params} params; parent trunk + branch "
        f"+ head match the tuned model (max abs diff {verification['max_abs_diff']:.2e})"
    )
    stored_branch = branch_artifact(branch, name=f"{spec.task}_branch")
    stored_head = head_artifact(result["head"], name=spec.task)
    described = info.as_dict()

    def register() -> dict:
        head_version = register_head(
            job,
            task_slug=spec.task,
            stored=stored_head,
            backbone_version=parent_version,
            dataset=dataset,
            metrics=metrics,
            branch_blob=stored_branch,
            branch=described,
        )
        return {
            "backbone_version": None,
            "head_versions": [head_version.pk],
            "forgetting_report": None,
            "branch": described,
            "verification": verification,
            "note": (
                f"No backbone version was created and no forgetting report is needed: the trunk every other head "
                f"of {parent_version.label} uses did not change. Head '{spec.task}' v{head_version.version} owns "
                f"the backbone's layers after '{info.after_layer}' as its branch ({len(info.layers)} layers, "
                f"{info.params} params; the top {len(trained)} weight-bearing ones trained)."
            ),
        }

    return finish_succeeded(job, register)
