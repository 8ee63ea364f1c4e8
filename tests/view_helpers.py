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
    user, backbone: BackboneVersion, heads: list[HeadVersion], *, status=None, input_shape=None, name: str = ""
) -> Assembly:
    """An assembly created by the service (no worker runs), then finished as the worker would leave it.

    `status` defaults to ready: a zip blob, a manifest with `input_shape` (default [None, 8]),
    a passing verification report and the signatures.
    """
    assembly, _ = assembly_create(
        team=backbone.team, user=user, backbone_id=backbone.pk, head_ids=[h.pk for h in heads], name=name
    )
    status = status or Assembly.Status.READY
    if status != Assembly.Status.READY:
        Assembly.objects.filter(pk=assembly.pk).update(status=status)
        assembly.refresh_from_db()
        return assembly
    entries = list(assembly.entries.select_related("head", "head__task", "head__blob"))
    manifest = {
        "format_version": 1,
        "backbone": {
            "name": backbone.name, "version": backbone.version, "sha256": backbone.blob.sha256,
            "input": {"name": "inputs", "shape": input_shape or [None, 8], "dtype": "float32"},
            "feature_shape": [6],
        },
        "serving": {"signature": "serving_default", "inputs": ["inputs", "task_id"],
                    "outputs": ["outputs", "output_width"],
                    "max_width": max(e.head.output_width for e in entries), "per_head_signatures": True},
        "heads": [
            {"task_id": e.task_id, "task": e.head.task.slug, "signature": e.head.task.slug, "version": e.head.version,
             "sha256": e.head.blob.sha256, "output_width": e.head.output_width, "labels": e.head.labels or None}
            for e in entries
        ],
    }  # fmt: skip
    checks = [
        {"task_id": e.task_id, "task": e.head.task.slug, "max_abs_diff": 1.5e-7 * (e.task_id + 1)} for e in entries
    ]
    Assembly.objects.filter(pk=assembly.pk).update(
        status=Assembly.Status.READY,
        blob=blob_store_bytes(data=f"zip of assembly {assembly.pk}".encode()).blob,
        saved_model_bytes=4321,
        manifest=manifest,
        verification={"max_abs_diff": max(c["max_abs_diff"] for c in checks), "heads": checks, "num_probe_rows": 2},
        signatures=["serving_default", "serving_by_task", *[e.head.task.slug for e in entries]],
        task_signatures=True,
    )
    assembly.refresh_from_db()
    return assembly


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
