"""Worker side: train_head jobs: one new head on the frozen backbone's cached features."""

from training.models import Job
from training.specs import TrainHeadSpec
from training.work.common import (
    build_head,
    feature_cache_dir,
    finish_succeeded,
    head_artifact,
    load_dataset,
    load_frozen_backbone,
    register_head,
    sized_head,
    validation_data,
)
from training.work.inputs import num_examples
from training.work.progress import JobReporter, steps_per_epoch


def run_train_head(job: Job, spec: TrainHeadSpec) -> dict:
    """Train the head, store it, then register it as a draft version with the job's success."""
    from modelhub.ml.train.heads import train_head

    backbone_version, backbone = load_frozen_backbone(spec.backbone)
    dataset, data = load_dataset(spec.dataset, backbone_version)
    head_spec = sized_head(spec.head, dataset, data["y"])
    rows = num_examples(data["x"])
    reporter = JobReporter(job, epochs=spec.epochs, steps_per_epoch=steps_per_epoch(rows, spec.batch_size))
    head = build_head(head_spec, backbone, name=spec.task, seed=spec.seed)
    reporter.log(f"training head '{spec.task}' on {rows} examples, backbone {backbone_version.label}")
    validation = validation_data(data)
    patience = spec.early_stopping.patience if spec.early_stopping else None
    if patience and validation is None:
        reporter.log("early stopping is off: the dataset has no validation split")
        patience = None
    outcome = train_head(
        backbone=backbone,
        head=head,
        x=data["x"],
        y=data["y"],
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        learning_rate=spec.learning_rate,
        cache_dir=feature_cache_dir(),
        seed=spec.seed,
        progress=reporter.epoch_callback(),
        should_cancel=reporter.should_cancel,
        validation_data=validation,
        early_stopping_patience=patience,
    )
    if outcome["stopped_early"]:
        reporter.log(f"early stopping after epoch {reporter.epoch}: validation loss stopped improving")
    stored = head_artifact(head, name=spec.task)
    metrics = reporter.final_metrics()

    def register() -> dict:
        version = register_head(
            job, task_slug=spec.task, stored=stored, backbone_version=backbone_version, dataset=dataset, metrics=metrics
        )
        return {"head_versions": [version.pk]}

    return finish_succeeded(job, register)
