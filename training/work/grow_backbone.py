"""Worker side: grow_backbone jobs: insert or widen a layer, verified to keep the function.

Without training the new version computes exactly what its parent did, so the parent's approved
heads are carried to it. With training they are not: a forgetting report goes to a reviewer.
"""

from backbones.models import BackboneVersion
from backbones.work.loading import load_backbone
from heads.services import heads_carry
from training.models import ForgettingReport, Job
from training.specs import GrowBackboneSpec
from training.work.common import (
    backbone_artifact,
    finish_succeeded,
    load_dataset,
    register_backbone,
)
from training.work.dataset_zips import DatasetError
from training.work.forgetting import forgetting_rows
from training.work.inputs import first_rows, num_examples
from training.work.progress import JobReporter, steps_per_epoch

# insert.kind -> modelhub.ml.grow kind
GROW_KINDS = {"dense": "dense_identity", "conv": "conv_identity", "residual": "residual"}


def grow_options(spec: GrowBackboneSpec) -> dict:
    """Return the keyword arguments of modelhub.ml.grow.grow_model for this job."""
    options = {"train": "new" if spec.train is None or spec.train.only_new_layers else "all"}
    if spec.insert:
        options.update(kind=GROW_KINDS[spec.insert.kind], after=spec.insert.after_layer)
        if spec.insert.kernel_size:
            options["kernel_size"] = spec.insert.kernel_size
        if spec.insert.hidden_units:
            options["hidden_units"] = spec.insert.hidden_units
    else:
        options.update(kind="widen", layer=spec.widen.layer, units=spec.widen.units)
    return options


def run_grow_backbone(job: Job, spec: GrowBackboneSpec) -> dict:
    """Grow (and optionally train) the backbone, store it and any report, then register."""
    from modelhub.ml.grow import grow_model
    from modelhub.ml.probes import rows_probe_shape
    from modelhub.ml.train.backbone import train_grown_backbone

    parent_version = BackboneVersion.objects.select_related("blob", "team").get(pk=spec.backbone)
    parent_model = load_backbone(parent_version)
    options = grow_options(spec)
    reporter = JobReporter(job, epochs=spec.train.epochs if spec.train else 1, steps_per_epoch=1)
    probe_shape = {}
    if spec.train:  # the dataset's row length probes open (None) inputs, unless the request names one
        dataset, data = load_dataset(spec.train.dataset, parent_version)
        if dataset.target != "classes":
            raise DatasetError("Training a grown backbone needs a classification dataset (integer labels).")
        probe_shape = rows_probe_shape(parent_model, first_rows(data["x"], 1))
    probe_shape.update(spec.probe_shape or {})
    reporter.log(f"growing {parent_version.label}: {options}" + (f", probe rows {probe_shape}" if probe_shape else ""))
    grown = grow_model(parent_model, probe_shape=probe_shape or None, **options)
    verification = grown["verification"]
    reporter.log(
        f"function preserved: max abs diff {verification['max_abs_diff']:.3g}, "
        f"relative {verification['relative_diff']:.3g}"
    )
    model = grown["model"]
    rows = None
    if spec.train:
        steps = steps_per_epoch(num_examples(data["x"]), spec.train.batch_size)
        reporter.restart(epochs=spec.train.epochs, steps_per_epoch=steps)
        train_grown_backbone(
            backbone=model,
            x=data["x"],
            y=data["y"],
            num_classes=dataset.num_classes,
            epochs=spec.train.epochs,
            batch_size=spec.train.batch_size,
            learning_rate=spec.train.learning_rate,
            progress=reporter.epoch_callback(),
            should_cancel=reporter.should_cancel,
        )
        # The parent freshly loaded: growing may share layers with the model it grew from.
        rows = forgetting_rows(
            parent_version=parent_version,
            parent_model=load_backbone(parent_version),
            new_model=model,
            reporter=reporter,
        )
    stored = backbone_artifact(model, name=parent_version.name)
    origin = {
        "kind": "grow",
        "change": spec.insert.to_params() if spec.insert else {"widen": spec.widen.to_params()},
        "verification": verification,
        "new_layers": grown["new_layers"],
        "trained": spec.train is not None,
    }

    def register() -> dict:
        new_version = register_backbone(job, stored=stored, parent=parent_version, origin=origin)
        result = {"backbone_version": new_version.pk, "verification": verification}
        if rows is not None:
            report = ForgettingReport.objects.create(job=job, parent=parent_version, backbone=new_version, rows=rows)
            result["forgetting_report"] = report.pk
        else:
            carried = heads_carry(
                parent=parent_version,
                backbone=new_version,
                user=job.retried_by or job.created_by,
                reason={"kind": "grow_preserved", "job": job.pk},
                job=job,
            )
            result["carried_head_versions"] = [head.pk for head in carried]
        return result

    return finish_succeeded(job, register)
