"""Registry rows for fast dashboard view tests, created through the services without a worker."""

from artifacts.services import blob_store_bytes
from assemblies.models import Assembly
from assemblies.services import assembly_create
from backbones.models import BackboneVersion
from backbones.services import backbone_version_create
from heads.models import HeadVersion
from heads.services import head_version_create, task_get_or_create
from teams.models import Team
from training.models import ForgettingReport, Job
from training.services import job_create
from training.specs import job_spec_parse

SPEC = {
    "name": "backbone",
    "class_name": "Functional",
    "inputs": [{"name": "inputs", "shape": [8], "dtype": "float32"}],
    "feature_layer": "features",
    "feature_shape": [6],
    "params": {"total": 186, "trainable": 186, "non_trainable": 0},
    "layers": [
        {"name": "inputs", "type": "InputLayer", "params": 0, "trainable": True, "has_weights": False},
        {"name": "hidden", "type": "Dense", "params": 108, "trainable": True, "has_weights": True},
        {"name": "features", "type": "Dense", "params": 78, "trainable": False, "has_weights": True},
    ],
}


def backbone_row(user, *, team: str = "vision", name: str = "tiny", parent=None, status=None) -> BackboneVersion:
    """A validated backbone version with a spec (as the worker would leave it)."""
    blob = blob_store_bytes(data=f"backbone {team} {name} {parent and parent.pk}".encode()).blob
    return backbone_version_create(
        team=Team.objects.get(slug=team), user=user, name=name, blob=blob, filename=f"{name}.keras",
        feature_layer="features", parent=parent, status=status or BackboneVersion.Status.READY, spec=SPEC,
    )  # fmt: skip


def head_row(user, backbone: BackboneVersion, *, task: str = "sentiment", status=None, **fields) -> HeadVersion:
    """A validated head version (draft unless `status` says otherwise) on `backbone`."""
    blob = blob_store_bytes(data=f"head {backbone.pk} {task} {fields}".encode()).blob
    task_row = task_get_or_create(team=backbone.team, slug=task)
    return head_version_create(
        task=task_row, backbone=backbone, blob=blob, user=user, filename=f"{task}.keras",
        status=status or HeadVersion.Status.DRAFT, output_width=fields.pop("output_width", 3), **fields,
    )  # fmt: skip


def assembly_row(
    user,
    backbone: BackboneVersion,
    heads: list[HeadVersion],
    *,
    status=None,
    input_shape=None,
    name: str = "",
    task_signatures: bool = False,
) -> Assembly:
    """An assembly created by the service (no worker runs), then finished as the worker would leave it.

    `status` defaults to ready: a zip blob, the manifest that the builder's own manifest writer
    gives for these heads on a backbone whose input has `input_shape` (default [None, 8]), a
    verification report in the verifier's shape and the signatures the builder lists.
    """
    assembly, _ = assembly_create(
        team=backbone.team, user=user, backbone_id=backbone.pk, head_ids=[h.pk for h in heads], name=name,
        task_signatures=task_signatures,
    )  # fmt: skip
    status = status or Assembly.Status.READY
    if status != Assembly.Status.READY:
        Assembly.objects.filter(pk=assembly.pk).update(status=status)
        assembly.refresh_from_db()
        return assembly
    entries = list(assembly.entries.select_related("head", "head__task", "head__blob").order_by("task_id"))
    manifest, verification = _written_manifest(backbone, entries, input_shape or [None, 8], task_signatures)
    signatures = ["serving_default", "serving_by_task"]
    if task_signatures:
        signatures += [entry.head.task.slug for entry in entries]
    Assembly.objects.filter(pk=assembly.pk).update(
        status=Assembly.Status.READY,
        blob=blob_store_bytes(data=f"zip of assembly {assembly.pk}".encode()).blob,
        saved_model_bytes=4321,
        manifest=manifest,
        verification=verification,
        signatures=signatures,
    )
    assembly.refresh_from_db()
    return assembly


def _written_manifest(backbone: BackboneVersion, entries, input_shape, task_signatures: bool) -> tuple[dict, dict]:
    """The builder's manifest for these rows, and a verification report with measured figures.

    Tiny Keras stand-ins have the shapes the rows record (the backbone's input and features, each
    head's output width); ``build_manifest`` (the builder's manifest writer) describes them. The
    verification report has the keys ``verify_assembly`` writes; its figures compare each stand-in's
    Keras outputs with a float64 NumPy recomputation on two probe rows, so they are measured, not typed.
    """
    import keras
    import numpy as np

    from modelhub.ml.assembly.manifest import AssemblyHead, build_manifest
    from modelhub.ml.tolerance import VERIFY_TOLERANCE

    keras.utils.set_random_seed(backbone.pk)
    inputs = keras.Input(tuple(input_shape[1:]), name="inputs")
    flat = keras.layers.Flatten()(inputs) if len(input_shape) > 2 else inputs
    features = keras.layers.Dense(int(backbone.spec["feature_shape"][0]), activation="relu")(flat)
    net = keras.Model(inputs, features, name=backbone.name)
    heads, models = [], []
    for entry in entries:
        head_in = keras.Input(tuple(net.outputs[0].shape[1:]), name="features")
        model = keras.Model(head_in, keras.layers.Dense(entry.head.output_width, activation="softmax")(head_in))
        models.append(model)
        heads.append(
            AssemblyHead(
                task=entry.head.task.slug, model=model, version=entry.head.version, sha256=entry.head.blob.sha256,
                labels=entry.head.labels or None,
            )
        )  # fmt: skip
    manifest = build_manifest(
        backbone=net,
        heads=heads,
        backbone_info={"name": backbone.name, "version": backbone.version, "sha256": backbone.blob.sha256},
        per_head_signatures=task_signatures,
    )
    probe = np.random.default_rng(0).standard_normal((2, *input_shape[1:])).astype("float32")
    kernel, bias = (np.asarray(w, np.float64) for w in net.layers[-1].get_weights())
    expected_features = np.maximum(probe.reshape(2, -1).astype(np.float64) @ kernel + bias, 0.0)
    checks = []
    for entry, model in zip(entries, models, strict=True):
        got = np.asarray(model(net(probe)), np.float64)
        head_kernel, head_bias = (np.asarray(w, np.float64) for w in model.layers[-1].get_weights())
        logits = expected_features @ head_kernel + head_bias
        expected = np.exp(logits - logits.max(axis=1, keepdims=True))
        expected /= expected.sum(axis=1, keepdims=True)
        diff = float(np.max(np.abs(got - expected)))
        checks.append(
            {"task_id": entry.task_id, "task": entry.head.task.slug, "max_abs_diff": diff,
             "max_rel_diff": diff / max(1.0, float(np.max(np.abs(expected))))}
        )  # fmt: skip
    verification = {
        "max_abs_diff": max(check["max_abs_diff"] for check in checks),
        "max_rel_diff": max(check["max_rel_diff"] for check in checks),
        "rtol": VERIFY_TOLERANCE,
        "heads": checks,
        "num_probe_rows": 2,
        "end_to_end_tasks": len(checks),
        "head_stage_tasks": len(checks),
        "checked": ["serving_default", "serving_by_task"],
    }
    return manifest, verification


def report_setup(alice, make_member=None):
    """A fine_tune-like job whose report covers one approved head of the parent."""
    parent = backbone_row(alice)
    child = backbone_row(alice, parent=parent)
    old_head = head_row(alice, parent, task="old-task", status=HeadVersion.Status.APPROVED)
    spec = job_spec_parse(Job.Kind.GROW_BACKBONE, {"backbone": parent.pk, "widen": {"layer": "hidden", "units": 24}})
    job = job_create(team=parent.team, user=alice, spec=spec)
    Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCEEDED)
    rows = [
        {"head_version": old_head.pk, "task": "old-task", "metric": "accuracy", "before": 0.9, "after": 0.75,
         "delta": -0.15},
    ]  # fmt: skip
    report = ForgettingReport.objects.create(job=job, parent=parent, backbone=child, rows=rows)
    return report, child
