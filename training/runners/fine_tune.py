"""Worker side: fine_tune jobs: a new backbone version, a head on it, and a forgetting report."""

from training.models import ForgettingReport, Job
from training.runners.common import (
    backbone_artifact,
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
from training.runners.forgetting import forgetting_rows
from training.runners.progress import JobReporter, steps_per_epoch
from training.specs import FineTuneSpec

# The library tags each epoch's metrics with its phase; the job shows these names.
PHASES = {"phase1": "warmup", "phase2": "finetune"}


def run_fine_tune(job: Job, spec: FineTuneSpec) -> dict:
    """Warm up a head, fine-tune the top layers, store both models and the report, then register."""
    from modelhub.ml.train import evaluate_head, fine_tune, make_trainable

    parent_version, parent_model = load_frozen_backbone(spec.backbone)
    dataset, data = load_dataset(spec.dataset, parent_version)
    head_spec = sized_head(spec.head, dataset, data["y"])
    reporter = JobReporter(
        job,
        epochs=spec.warmup_epochs + spec.epochs,
        steps_per_epoch=steps_per_epoch(len(data["x"]), spec.batch_size),
    )
    head = build_head(head_spec, parent_model, name=spec.task, seed=spec.seed)
    reporter.log(
        f"fine-tuning: {spec.warmup_epochs} warm-up epochs, then {spec.epochs} with the top {spec.unfreeze_top} layers"
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
