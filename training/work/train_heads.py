"""Worker side: train_heads jobs: several heads in one pass of backbone features."""

from training.models import Job
from training.specs import TrainHeadsSpec
from training.work.common import (
    build_head,
    feature_cache_dir,
    finish_succeeded,
    head_artifact,
    load_dataset,
    load_frozen_backbone,
    register_head,
    sized_head,
)
from training.work.inputs import num_examples
from training.work.progress import JobReporter, steps_per_epoch


def run_train_heads(job: Job, spec: TrainHeadsSpec) -> dict:
    """Train every head together, score each on its validation split, then register them all."""
    from modelhub.ml.features import cached_features
    from modelhub.ml.train.evaluate import head_validation_metrics
    from modelhub.ml.train.heads import train_heads

    backbone_version, backbone = load_frozen_backbone(spec.backbone)
    # Several tasks often share one dataset: load each once. All share the inputs x (job_create checks).
    by_dataset = {dataset_id: load_dataset(dataset_id, backbone_version) for dataset_id in spec.dataset_ids()}
    x = by_dataset[spec.tasks[0].dataset][1]["x"]
    reporter = JobReporter(job, epochs=spec.epochs, steps_per_epoch=steps_per_epoch(num_examples(x), spec.batch_size))
    heads = {}
    for entry in spec.tasks:
        dataset, data = by_dataset[entry.dataset]
        heads[entry.task] = build_head(
            sized_head(entry.head, dataset, data["y"]), backbone, name=entry.task, seed=spec.seed
        )
    rates = {entry.task: entry.learning_rate for entry in spec.tasks}
    reporter.log(f"training {len(heads)} heads in {spec.mode} mode on {num_examples(x)} shared examples")
    train_heads(
        backbone=backbone,
        heads=heads,
        x=x,
        ys={entry.task: by_dataset[entry.dataset][1]["y"] for entry in spec.tasks},
        epochs=spec.epochs,
        mode=spec.mode,
        batch_size=spec.batch_size,
        learning_rates=rates if spec.mode == "disjoint" else spec.tasks[0].learning_rate,
        cache_dir=feature_cache_dir(),
        seed=spec.seed,
        progress=reporter.epoch_callback(),
        should_cancel=reporter.should_cancel,
    )
    final = reporter.final_metrics()
    val_features = {}
    for dataset_id, (_, data) in by_dataset.items():
        if "x_val" in data:
            val_features[dataset_id] = cached_features(backbone, data["x_val"], cache_dir=feature_cache_dir())[0]
    metrics_by_task, stored = {}, {}
    for entry in spec.tasks:
        metrics = {k: v for k, v in final.items() if k.startswith(f"{entry.task}_") or k == "loss"}
        if entry.dataset in val_features:
            y_val = by_dataset[entry.dataset][1]["y_val"]
            metrics.update(head_validation_metrics(heads[entry.task], val_features[entry.dataset], y_val))
        metrics_by_task[entry.task] = metrics
        stored[entry.task] = head_artifact(heads[entry.task], name=entry.task)

    def register() -> dict:
        created = [
            register_head(
                job,
                task_slug=entry.task,
                stored=stored[entry.task],
                backbone_version=backbone_version,
                dataset=by_dataset[entry.dataset][0],
                metrics=metrics_by_task[entry.task],
            ).pk
            for entry in spec.tasks
        ]
        return {"head_versions": created, "mode": spec.mode}

    return finish_succeeded(job, register)
