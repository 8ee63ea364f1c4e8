"""Worker side: run training jobs, report progress on the row, register results at the end.

Nothing is registered until the training has finished: results are written in one
transaction, so a cancelled, failed or killed job leaves no half-made backbone or head.
"""

import logging
import time
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from heads.model_files import head_output_width, save_model_as_blob
from heads.models import HeadEvent, HeadVersion
from heads.services import head_version_create, task_get_or_create
from modelhub.backbones.loading import load_backbone, load_model_blob
from modelhub.backbones.models import BackboneVersion
from modelhub.backbones.services import backbone_version_create
from modelhub.core.tracked_work import row_finish, run_tracked
from training.datasets import DatasetError, dataset_arrays
from training.models import Dataset, ForgettingReport, Job
from training.services import heads_carry

logger = logging.getLogger(__name__)
LOG_TAIL_CHARS = 20_000
GROW_KINDS = {"dense": "dense_identity", "conv": "conv_identity", "residual": "residual"}


class EarlyStop(Exception):
    """Raised from the epoch callback when validation loss stopped improving."""


class JobReporter:
    """Write progress, per-epoch metrics and log lines to the job row; answer cancel checks."""

    def __init__(self, job: Job, *, epochs: int, steps_per_epoch: int) -> None:
        self.job = job
        self.epochs = max(epochs, 1)
        self.steps_per_epoch = max(steps_per_epoch, 1)
        self.step = 0
        self.epoch = 0
        self.started = time.monotonic()
        self.last_write = 0.0
        self.last_cancel_check = 0.0
        self.cancel = False

    def _progress(self) -> dict:
        done = self.epoch * self.steps_per_epoch + self.step
        total = self.epochs * self.steps_per_epoch
        elapsed = time.monotonic() - self.started
        eta = elapsed / done * (total - done) if done else None
        return {
            "epoch": self.epoch,
            "epochs": self.epochs,
            "step": self.step,
            "steps": self.steps_per_epoch,
            "eta_s": round(eta, 1) if eta is not None else None,
        }

    def should_cancel(self) -> bool:
        """Called before every batch: count it, write progress (at most 1/s), poll the cancel flag."""
        self.step = min(self.step + 1, self.steps_per_epoch)
        now = time.monotonic()
        if now - self.last_write > 1.0:
            Job.objects.filter(pk=self.job.pk).update(progress=self._progress())
            self.last_write = now
        if now - self.last_cancel_check > 0.5:
            self.cancel = Job.objects.filter(pk=self.job.pk, cancel_requested=True).exists()
            self.last_cancel_check = now
        return self.cancel

    def on_epoch(self, metrics: dict, *, phase: str | None = None) -> None:
        self.epoch = min(self.epoch + 1, self.epochs)
        self.step = 0
        entry = {k: (float(v) if isinstance(v, int | float | np.floating) else v) for k, v in metrics.items()}
        entry["epoch"] = self.epoch
        if phase:
            entry["phase"] = phase
        self.job.metrics = [*self.job.metrics, entry]
        shown = ", ".join(f"{k}={v:.4f}" for k, v in entry.items() if isinstance(v, float))
        self.log(f"epoch {self.epoch}/{self.epochs}{f' ({phase})' if phase else ''}: {shown}", metrics=self.job.metrics)

    def log(self, line: str, **fields) -> None:
        stamp = timezone.now().strftime("%H:%M:%S")
        self.job.log = (self.job.log + f"[{stamp}] {line}\n")[-LOG_TAIL_CHARS:]
        Job.objects.filter(pk=self.job.pk).update(log=self.job.log, progress=self._progress(), **fields)


def job_run(*, job_id: int) -> Job | None:
    """Claim the job, run it by kind, record succeeded / cancelled / failed on the row."""
    return run_tracked(Job, job_id, _run)


def _run(job: Job) -> None:
    from modelhub.ml.errors import MLError, TrainingCancelled

    try:
        result = RUNNERS[job.kind](job)
    except TrainingCancelled as exc:
        row_finish(job, status=Job.Status.CANCELLED, error=f"{exc} Nothing was registered.")
    except (MLError, DatasetError) as exc:
        row_finish(job, status=Job.Status.FAILED, error=str(exc))
    except Exception as exc:
        logger.exception("job %s crashed", job.pk)
        row_finish(job, status=Job.Status.FAILED, error=f"The job crashed: {type(exc).__name__}: {exc}")
    else:
        job.refresh_from_db(fields=["metrics", "log", "progress"])
        row_finish(job, status=Job.Status.SUCCEEDED, result=result)


# --- Shared pieces ------------------------------------------------------------------------


def _cache_dir() -> Path:
    return Path(settings.MODELHUB_HOME) / "cache" / "features"


def _backbone(version_id: int):
    from modelhub.ml.freeze import freeze_backbone

    version = BackboneVersion.objects.select_related("blob", "team").get(pk=version_id)
    model = load_backbone(version)
    freeze_backbone(model)
    return version, model


def _arrays(dataset_id: int, backbone_version: BackboneVersion) -> tuple[Dataset, dict]:
    dataset = Dataset.objects.select_related("blob").get(pk=dataset_id)
    input_shape = backbone_version.spec["inputs"][0]["shape"]
    data = dataset_arrays(dataset, input_shape=input_shape)
    data["x"] = data["x"].astype(backbone_version.spec["inputs"][0]["dtype"], copy=False)
    return dataset, data


def _build_head(spec: dict, backbone, name: str, seed: int | None):
    from modelhub.ml.train import build_head

    return build_head(
        backbone.outputs[0].shape[1:],
        units=spec["units"],
        kind=spec["type"],
        activation=spec["activation"],
        hidden_units=spec.get("hidden", ()),
        dropout=spec.get("dropout", 0.0),
        name=name,
        seed=seed,
    )


def _validation_metrics(head, val_features, y_val) -> dict:
    """Loss and accuracy (classes) or MAE (values) of a head on precomputed validation features."""
    predictions = np.asarray(head(val_features, training=False))
    if np.issubdtype(np.asarray(y_val).dtype, np.integer):
        probabilities = np.clip(predictions[np.arange(len(y_val)), y_val], 1e-7, 1.0)
        return {
            "val_loss": float(-np.mean(np.log(probabilities))),
            "val_accuracy": float(np.mean(predictions.argmax(axis=1) == y_val)),
        }
    error = predictions.reshape(len(y_val), -1) - np.asarray(y_val, dtype=np.float32).reshape(len(y_val), -1)
    return {"val_loss": float(np.mean(error**2)), "val_mae": float(np.mean(np.abs(error)))}


def _epoch_callback(reporter: JobReporter, head=None, val=None, patience: int | None = None, phase=None):
    """Return the library's per-epoch progress callback, adding validation metrics and early stopping."""
    best = {"loss": np.inf, "epochs_since": 0}

    def progress(metrics: dict) -> None:
        metrics = {k: v for k, v in metrics.items() if k not in ("epoch", "epochs")}
        if head is not None and val is not None:
            metrics.update(_validation_metrics(head, *val))
        reporter.on_epoch(metrics, phase=phase)
        if patience and "val_loss" in metrics:
            if metrics["val_loss"] < best["loss"] - 1e-6:
                best.update(loss=metrics["val_loss"], epochs_since=0)
            else:
                best["epochs_since"] += 1
                if best["epochs_since"] >= patience:
                    raise EarlyStop()

    return progress


def _val_features(backbone, data: dict):
    from modelhub.ml.features import cached_features

    if "x_val" not in data:
        return None
    features, _ = cached_features(backbone, data["x_val"].astype(data["x"].dtype), cache_dir=_cache_dir())
    return features, data["y_val"]


def _final_metrics(job: Job) -> dict:
    job.refresh_from_db(fields=["metrics"])
    return {k: v for k, v in (job.metrics[-1] if job.metrics else {}).items() if k not in ("epoch", "phase")}


def _register_head(job: Job, *, task_slug: str, head, backbone_version, dataset: Dataset, metrics: dict) -> HeadVersion:
    blob = save_model_as_blob(head, name=task_slug)
    from modelhub.ml.inspect import inspect_model

    task = task_get_or_create(team=backbone_version.team, slug=task_slug, labels=dataset.labels)
    return head_version_create(
        task=task,
        backbone=backbone_version,
        blob=blob,
        user=job.created_by,
        filename=f"{task_slug}.keras",
        labels=dataset.labels if len(dataset.labels or []) == head_output_width(head) else [],
        status=HeadVersion.Status.DRAFT,
        output_width=head_output_width(head),
        spec=inspect_model(head),
        metrics={**metrics, "history": job.metrics},
        origin={"kind": "job", "job": job.pk, "job_kind": job.kind},
        action=HeadEvent.Action.TRAINED,
        dataset=dataset,
    )


def _register_backbone(job: Job, *, model, parent: BackboneVersion, origin: dict) -> BackboneVersion:
    from modelhub.ml.inspect import inspect_model, weights_fingerprint

    blob = save_model_as_blob(model, name=parent.name)
    fingerprint = weights_fingerprint(model)
    return backbone_version_create(
        team=parent.team,
        user=job.created_by,
        name=parent.name,
        blob=blob,
        filename=f"{parent.name}.keras",
        parent=parent,
        origin={**origin, "job": job.pk},
        status=BackboneVersion.Status.READY,
        spec=dict(inspect_model(model), weights_sha256=fingerprint),
        weights_sha256=fingerprint,
        description=f"Made by {job.kind} job {job.pk} from {parent.label}.",
    )


def _forgetting_report(job: Job, *, parent_version, parent_model, new_version, new_model, reporter) -> ForgettingReport:
    """Evaluate the parent's approved heads that have validation data through both backbones."""
    from modelhub.ml.train import evaluate_head

    rows = []
    heads = HeadVersion.objects.filter(backbone=parent_version, status=HeadVersion.Status.APPROVED).select_related(
        "task", "dataset", "blob"
    )
    for head in heads:
        if head.dataset is None or not head.dataset.num_validation:
            continue
        _, data = _arrays(head.dataset_id, parent_version)
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
    return ForgettingReport.objects.create(job=job, parent=parent_version, backbone=new_version, rows=rows)


def _steps(num_examples: int, batch_size: int) -> int:
    return -(-num_examples // max(batch_size, 1))


# --- Job kinds ----------------------------------------------------------------------------


def run_train_head(job: Job) -> dict:
    from modelhub.ml.train import train_head

    params = job.params
    backbone_version, backbone = _backbone(params["backbone"])
    dataset, data = _arrays(params["dataset"], backbone_version)
    _check_labels(params["head"], data["y"], dataset)
    epochs, batch_size = int(params.get("epochs", 5)), int(params.get("batch_size", 32))
    reporter = JobReporter(job, epochs=epochs, steps_per_epoch=_steps(len(data["x"]), batch_size))
    head = _build_head(params["head"], backbone, params["task"], params.get("seed"))
    reporter.log(f"training head '{params['task']}' on {len(data['x'])} examples, backbone {backbone_version.label}")
    patience = (params.get("early_stopping") or {}).get("patience") if params.get("early_stopping") else None
    try:
        train_head(
            backbone=backbone,
            head=head,
            x=data["x"],
            y=data["y"],
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=float(params.get("learning_rate", 1e-3)),
            cache_dir=_cache_dir(),
            seed=params.get("seed"),
            progress=_epoch_callback(reporter, head, _val_features(backbone, data), patience),
            should_cancel=reporter.should_cancel,
        )
    except EarlyStop:
        reporter.log(f"early stopping after epoch {reporter.epoch}: validation loss stopped improving")
    with transaction.atomic():
        version = _register_head(
            job,
            task_slug=params["task"],
            head=head,
            backbone_version=backbone_version,
            dataset=dataset,
            metrics=_final_metrics(job),
        )
    return {"head_versions": [version.pk]}


def run_train_heads(job: Job) -> dict:
    from modelhub.ml.train import train_heads

    params = job.params
    backbone_version, backbone = _backbone(params["backbone"])
    by_dataset: dict[int, tuple[Dataset, dict]] = {}
    for entry in params["tasks"]:  # several tasks often share one dataset: load it once
        if entry["dataset"] not in by_dataset:
            by_dataset[entry["dataset"]] = _arrays(entry["dataset"], backbone_version)
    loaded = {entry["task"]: by_dataset[entry["dataset"]] for entry in params["tasks"]}
    x = next(iter(loaded.values()))[1]["x"]
    for entry in params["tasks"]:
        _check_labels(entry["head"], loaded[entry["task"]][1]["y"], loaded[entry["task"]][0])
    epochs, batch_size = int(params.get("epochs", 5)), int(params.get("batch_size", 32))
    reporter = JobReporter(job, epochs=epochs, steps_per_epoch=_steps(len(x), batch_size))
    heads = {e["task"]: _build_head(e["head"], backbone, e["task"], params.get("seed")) for e in params["tasks"]}
    rates = {e["task"]: float(e.get("learning_rate", 1e-3)) for e in params["tasks"]}
    reporter.log(f"training {len(heads)} heads in {params['mode']} mode on {len(x)} shared examples")
    train_heads(
        backbone=backbone,
        heads=heads,
        x=x,
        ys={task: data["y"] for task, (_, data) in loaded.items()},
        epochs=epochs,
        mode=params["mode"],
        batch_size=batch_size,
        learning_rates=rates if params["mode"] == "disjoint" else next(iter(rates.values())),
        cache_dir=_cache_dir(),
        seed=params.get("seed"),
        progress=_epoch_callback(reporter),
        should_cancel=reporter.should_cancel,
    )
    final = _final_metrics(job)
    val_by_dataset = {dataset_id: _val_features(backbone, data) for dataset_id, (_, data) in by_dataset.items()}
    metrics_by_task = {}
    for entry in params["tasks"]:
        task, val = entry["task"], val_by_dataset[entry["dataset"]]
        metrics_by_task[task] = {k: v for k, v in final.items() if k.startswith(f"{task}_") or k == "loss"}
        if val is not None:
            metrics_by_task[task].update(_validation_metrics(heads[task], *val))
    created = []
    with transaction.atomic():
        for task, head in heads.items():
            dataset, metrics = loaded[task][0], metrics_by_task[task]
            created.append(
                _register_head(
                    job, task_slug=task, head=head, backbone_version=backbone_version, dataset=dataset, metrics=metrics
                ).pk
            )
    return {"head_versions": created, "mode": params["mode"]}


def run_fine_tune(job: Job) -> dict:
    from modelhub.ml.train import fine_tune

    params = job.params
    parent_version, parent_model = _backbone(params["backbone"])
    dataset, data = _arrays(params["dataset"], parent_version)
    _check_labels(params["head"], data["y"], dataset)
    warmup, epochs = int(params.get("warmup_epochs", 2)), int(params.get("epochs", 2))
    batch_size = int(params.get("batch_size", 32))
    reporter = JobReporter(job, epochs=warmup + epochs, steps_per_epoch=_steps(len(data["x"]), batch_size))
    head = _build_head(params["head"], parent_model, params["task"], params.get("seed"))
    reporter.log(f"fine-tuning: {warmup} warm-up epochs, then {epochs} with the top {params['unfreeze_top']} layers")
    # The library tags each epoch's metrics with its phase: "phase1" (warm-up) or "phase2".
    by_phase = {
        "phase1": _epoch_callback(reporter, phase="warmup"),
        "phase2": _epoch_callback(reporter, phase="finetune"),
    }

    def progress(metrics: dict) -> None:
        by_phase[metrics["phase"]](metrics)

    result = fine_tune(
        backbone=parent_model,
        head=head,
        x=data["x"],
        y=data["y"],
        phase1_epochs=warmup,
        phase2_epochs=epochs,
        unfreeze_layers=int(params["unfreeze_top"]),
        learning_rate=float(params.get("learning_rate", 1e-3)),
        phase2_lr_factor=float(params.get("finetune_lr_factor", 0.1)),
        batch_size=batch_size,
        cache_dir=_cache_dir(),
        seed=params.get("seed"),
        progress=progress,
        should_cancel=reporter.should_cancel,
    )
    new_model = result["backbone"]
    for layer in new_model.layers:
        layer.trainable = True
    metrics = _final_metrics(job)
    val = None
    if "x_val" in data:
        from modelhub.ml.train import evaluate_head

        val = evaluate_head(new_model, head, data["x_val"], data["y_val"])
        metrics.update({f"val_{k}": v for k, v in val.items() if k != "num_examples"})
    with transaction.atomic():
        new_version = _register_backbone(
            job,
            model=new_model,
            parent=parent_version,
            origin={"kind": "fine_tune", "unfreeze_top": int(params["unfreeze_top"])},
        )
        head_version = _register_head(
            job, task_slug=params["task"], head=head, backbone_version=new_version, dataset=dataset, metrics=metrics
        )
        report = _forgetting_report(
            job,
            parent_version=parent_version,
            parent_model=parent_model,
            new_version=new_version,
            new_model=new_model,
            reporter=reporter,
        )
    return {"backbone_version": new_version.pk, "head_versions": [head_version.pk], "forgetting_report": report.pk}


def run_grow_backbone(job: Job) -> dict:
    from modelhub.ml.grow import grow_model

    params = job.params
    parent_version = BackboneVersion.objects.select_related("blob", "team").get(pk=params["backbone"])
    parent_model = load_backbone(parent_version)
    train = params.get("train") or None
    options = {"train": "new" if (train or {}).get("only_new_layers", True) else "all"}
    if params.get("insert"):
        insert = params["insert"]
        options.update(kind=GROW_KINDS[insert["kind"]], after=insert["after_layer"])
        for key in ("kernel_size", "hidden_units"):
            if insert.get(key):
                options[key] = int(insert[key])
    else:
        options.update(kind="widen", layer=params["widen"]["layer"], units=int(params["widen"]["units"]))
    reporter = JobReporter(job, epochs=int((train or {}).get("epochs", 0)) or 1, steps_per_epoch=1)
    reporter.log(f"growing {parent_version.label}: {options}")
    grown = grow_model(parent_model, **options)
    verification = grown["verification"]
    reporter.log(
        f"function preserved: max abs diff {verification['max_abs_diff']:.3g}, "
        f"relative {verification['relative_diff']:.3g}"
    )
    model = grown["model"]
    if train:
        model = _train_grown(job, model, train, parent_version, reporter)
    origin = {
        "kind": "grow",
        "change": params.get("insert") or {"widen": params["widen"]},
        "verification": verification,
        "new_layers": grown["new_layers"],
        "trained": bool(train),
    }
    with transaction.atomic():
        new_version = _register_backbone(job, model=model, parent=parent_version, origin=origin)
        result = {"backbone_version": new_version.pk, "verification": verification}
        if train:
            frozen_parent = load_backbone(parent_version)
            report = _forgetting_report(
                job,
                parent_version=parent_version,
                parent_model=frozen_parent,
                new_version=new_version,
                new_model=model,
                reporter=reporter,
            )
            result["forgetting_report"] = report.pk
        else:
            carried = heads_carry(
                parent=parent_version,
                backbone=new_version,
                user=job.created_by,
                reason={"kind": "grow_preserved", "job": job.pk},
            )
            result["carried_head_versions"] = [head.pk for head in carried]
    return result


def _train_grown(job: Job, model, train: dict, parent_version: BackboneVersion, reporter: JobReporter):
    """Train the grown backbone (new layers only, or all) under a temporary classification head."""
    import keras

    dataset, data = _arrays(train["dataset"], parent_version)
    if dataset.target != "classes":
        raise DatasetError("Training a grown backbone needs a classification dataset (integer labels).")
    epochs, batch_size = int(train.get("epochs", 1)), int(train.get("batch_size", 32))
    reporter.epochs, reporter.steps_per_epoch = epochs, _steps(len(data["x"]), batch_size)
    head = _build_head({"type": "dense", "units": dataset.num_classes, "activation": "softmax"}, model, "probe", 0)
    inputs = keras.Input(model.inputs[0].shape[1:], name="inputs", dtype=model.inputs[0].dtype)
    full = keras.Model(inputs, head(model(inputs, training=False)))
    full.compile(
        optimizer=keras.optimizers.Adam(float(train.get("learning_rate", 1e-4))),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    progress = _epoch_callback(reporter)

    class Report(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if reporter.should_cancel():
                from modelhub.ml.errors import TrainingCancelled

                raise TrainingCancelled(f"Training was cancelled at batch {batch + 1}.")

        def on_epoch_end(self, epoch, logs=None):
            progress(dict(logs or {}))

    full.fit(data["x"], data["y"], epochs=epochs, batch_size=batch_size, verbose=0, callbacks=[Report()])
    return model


def _check_labels(head_spec: dict, y: np.ndarray, dataset: Dataset) -> None:
    if dataset.target == "classes" and int(np.max(y)) >= head_spec["units"]:
        raise DatasetError(
            f"Labels reach {int(np.max(y))} but the head has {head_spec['units']} outputs; use at least "
            f"{int(np.max(y)) + 1} units."
        )


RUNNERS = {
    Job.Kind.TRAIN_HEAD: run_train_head,
    Job.Kind.TRAIN_HEADS: run_train_heads,
    Job.Kind.FINE_TUNE: run_fine_tune,
    Job.Kind.GROW_BACKBONE: run_grow_backbone,
}
