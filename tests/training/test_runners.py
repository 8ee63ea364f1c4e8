"""The job runners called in-process on Job rows (no worker): what each registers, the job's
terminal status and result, and that a failing, cancelled or lost job registers nothing."""

import pytest

from backbones.models import BackboneVersion
from heads.models import HeadVersion
from tests import model_factory as mf
from tests.training.helpers import backbone_version_row, dataset_row_from_file
from training.models import ForgettingReport, Job
from training.services import job_create
from training.specs import job_spec_parse
from training.work import common, jobs
from training.work.jobs import job_run

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(make_member):
    return make_member("alice", team="vision", role="member")[0]


@pytest.fixture
def backbone(alice, tmp_path):
    return backbone_version_row(alice, tmp_path)


@pytest.fixture
def dataset(alice, tmp_path):
    return dataset_row_from_file(alice, mf.make_classification_npz(tmp_path / "train.npz", num_rows=96), name="q")


def queued(user, kind: str, **params) -> Job:
    job = job_create(team=user.memberships.get().team, user=user, spec=job_spec_parse(kind, params))
    assert job.status == Job.Status.QUEUED, job.error
    return job


def run(job: Job) -> Job:
    job_run(job_id=job.pk)
    job.refresh_from_db()
    return job


def approved_head(user, backbone, dataset, task: str = "old-task") -> HeadVersion:
    """Train a head with a job and approve it (the parent's approved head of growth and fine-tuning)."""
    job = run(queued(user, "train_head", backbone=backbone.pk, dataset=dataset.pk, task=task, epochs=1))
    assert job.status == Job.Status.SUCCEEDED, job.error
    head = HeadVersion.objects.get(pk=job.result["head_versions"][0])
    HeadVersion.objects.filter(pk=head.pk).update(status=HeadVersion.Status.APPROVED)
    return head


def test_train_head_registers_a_draft_head_with_the_jobs_success(alice, backbone, dataset, monkeypatch):
    beats = []
    monkeypatch.setattr("training.work.progress.work_heartbeat", lambda row, **kw: beats.append(row.pk))
    job = queued(
        alice, "train_head", backbone=backbone.pk, dataset=dataset.pk, task="quadrant", head={"type": "mlp",
        "hidden": [8]}, epochs=3, batch_size=16, learning_rate=0.05, seed=1,
    )  # fmt: skip
    job = run(job)
    assert (job.status, job.error) == (Job.Status.SUCCEEDED, "")
    [head] = HeadVersion.objects.all()
    assert job.result == {"head_versions": [head.pk]}
    assert (head.status, head.task.slug, head.backbone_id, head.output_width) == ("draft", "quadrant", backbone.pk, 3)
    assert head.labels == ["class_0", "class_1", "class_2"] and head.dataset_id == dataset.pk
    assert [m["epoch"] for m in job.metrics] == [1, 2, 3]
    assert all({"loss", "accuracy", "val_loss", "val_accuracy"} <= set(m) for m in job.metrics)
    assert head.metrics["val_accuracy"] == job.metrics[-1]["val_accuracy"] and len(head.metrics["history"]) == 3
    assert job.progress["epoch"] == 3 and "epoch 3/3" in job.log
    assert beats and set(beats) == {job.pk}  # every batch tells the reaper the worker is alive
    assert [layer["name"] for layer in head.spec["layers"]][-1] == "output"


def test_train_head_stops_early_when_the_validation_loss_stops_improving(alice, backbone, dataset):
    job = run(
        queued(
            alice,
            "train_head",
            backbone=backbone.pk,
            dataset=dataset.pk,
            task="early",
            epochs=60,
            learning_rate=1.0,
            early_stopping={"patience": 1},
            seed=0,
        )  # fmt: skip
    )
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert len(job.metrics) < 60 and "early stopping after epoch" in job.log


@pytest.mark.parametrize("mode", ["joint", "disjoint"])
def test_train_heads_registers_every_head_at_once(alice, backbone, dataset, tmp_path, mode):
    same_x = mf.make_classification_npz(tmp_path / "b.npz", num_rows=96, rule_seed=1, num_classes=4)
    other = dataset_row_from_file(alice, same_x, name="b")
    rates = (0.01, 0.01) if mode == "joint" else (0.01, 0.05)
    job = run(
        queued(
            alice,
            "train_heads",
            backbone=backbone.pk,
            mode=mode,
            epochs=2,
            seed=0,
            tasks=[
                {"task": "a", "dataset": dataset.pk, "learning_rate": rates[0]},
                {"task": "b", "dataset": other.pk, "head": {"type": "mlp", "hidden": [4]}, "learning_rate": rates[1]},
            ],
        )  # fmt: skip
    )
    assert job.status == Job.Status.SUCCEEDED, job.error
    heads = HeadVersion.objects.filter(pk__in=job.result["head_versions"])
    assert sorted((h.task.slug, h.output_width) for h in heads) == [("a", 3), ("b", 4)]
    assert job.result["mode"] == mode and len(job.metrics) == 2
    assert all("val_accuracy" in h.metrics and "loss" in h.metrics for h in heads)


def test_fine_tune_registers_backbone_head_and_report_together(alice, backbone, dataset, tmp_path):
    old = approved_head(alice, backbone, dataset)
    other = dataset_row_from_file(alice, mf.make_classification_npz(tmp_path / "n.npz", num_rows=96, rule_seed=5))
    job = run(
        queued(
            alice,
            "fine_tune",
            backbone=backbone.pk,
            dataset=other.pk,
            task="new-task",
            unfreeze_top=1,
            warmup_epochs=1,
            epochs=2,
            learning_rate=0.05,
            seed=0,
        )  # fmt: skip
    )
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert [m.get("phase") for m in job.metrics] == ["warmup", "finetune", "finetune"]
    child = BackboneVersion.objects.get(pk=job.result["backbone_version"])
    assert (child.parent_id, child.version, child.status) == (backbone.pk, 2, "ready")
    assert child.weights_sha256 != backbone.weights_sha256 and child.origin["job"] == job.pk
    head = HeadVersion.objects.get(pk=job.result["head_versions"][0])
    assert (head.backbone_id, head.status, head.task.slug) == (child.pk, "draft", "new-task")
    report = ForgettingReport.objects.get(pk=job.result["forgetting_report"])
    assert (report.job_id, report.parent_id, report.backbone_id) == (job.pk, backbone.pk, child.pk)
    assert report.status == "pending"
    [row] = report.rows
    assert (row["head_version"], row["metric"]) == (old.pk, "accuracy")
    assert row["delta"] == pytest.approx(row["after"] - row["before"])
    # The saved backbone carries no freeze state.
    assert all(layer["trainable"] for layer in child.spec["layers"] if layer["has_weights"])


def test_fine_tune_to_a_branch_registers_only_a_head_on_the_parent(alice, backbone, dataset):
    approved_head(alice, backbone, dataset)
    heads, backbones, reports = counts()
    params = dict(unfreeze_top=1, warmup_epochs=1, epochs=2, learning_rate=0.05, seed=0, output="branch")
    job = run(queued(alice, "fine_tune", backbone=backbone.pk, dataset=dataset.pk, task="new-task", **params))
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert counts() == (heads + 1, backbones, reports)
    assert [m.get("phase") for m in job.metrics] == ["warmup", "finetune", "finetune"]
    head = HeadVersion.objects.get(pk=job.result["head_versions"][0])
    assert (head.backbone_id, head.status, head.task.slug) == (backbone.pk, "draft", "new-task")
    # The tiny backbone is inputs > hidden > features: training 'features' branches after 'hidden'.
    branch = {"after_layer": "hidden", "layers": ["features"], "params": 12 * 6 + 6}
    assert head.branch == branch and head.branch_blob_id not in (None, head.blob_id)
    assert job.result["backbone_version"] is None and job.result["forgetting_report"] is None
    assert job.result["branch"] == branch and job.result["verification"]["max_abs_diff"] <= 1e-5
    assert job.result["note"].startswith(
        "No backbone version was created and no forgetting report is needed: the trunk every other head"
    )
    assert "the branch will start after 'hidden'" in job.log


def test_fine_tune_to_a_branch_fails_before_training_when_no_branch_point_fits(alice, backbone, dataset):
    before = counts()
    params = dict(backbone=backbone.pk, dataset=dataset.pk, task="t", unfreeze_top=2, output="branch")
    job = run(queued(alice, "fine_tune", **params))
    assert job.status == Job.Status.FAILED
    assert "none lies below them all" in job.error and "fine-tune with output 'backbone'" in job.error
    assert counts() == before and job.result == {} and job.metrics == []


def test_untrained_growth_carries_the_approved_heads(alice, backbone, dataset):
    old = approved_head(alice, backbone, dataset)
    job = run(queued(alice, "grow_backbone", backbone=backbone.pk, insert={"after_layer": "hidden", "kind": "dense"}))
    assert job.status == Job.Status.SUCCEEDED, job.error
    grown = BackboneVersion.objects.get(pk=job.result["backbone_version"])
    assert grown.parent_id == backbone.pk and grown.origin["change"] == {"after_layer": "hidden", "kind": "dense"}
    assert job.result["verification"]["max_abs_diff"] <= 1e-6
    [carried] = HeadVersion.objects.filter(pk__in=job.result["carried_head_versions"])
    assert (carried.backbone_id, carried.status, carried.task_id, carried.blob_id) == (
        grown.pk, "approved", old.task_id, old.blob_id,
    )  # fmt: skip
    assert carried.origin == {"kind": "grow_preserved", "job": job.pk, "from_head_version": old.pk}
    assert not ForgettingReport.objects.exists()


def test_trained_growth_makes_a_forgetting_report_instead(alice, backbone, dataset):
    approved_head(alice, backbone, dataset)
    job = run(
        queued(
            alice,
            "grow_backbone",
            backbone=backbone.pk,
            widen={"layer": "hidden", "units": 16},
            train={"dataset": dataset.pk, "epochs": 2, "learning_rate": 0.01},
        )  # fmt: skip
    )
    assert job.status == Job.Status.SUCCEEDED, job.error
    grown = BackboneVersion.objects.get(pk=job.result["backbone_version"])
    assert grown.origin["trained"] and grown.origin["change"] == {"widen": {"layer": "hidden", "units": 16}}
    assert "carried_head_versions" not in job.result
    assert HeadVersion.objects.filter(backbone=grown).count() == 0
    report = ForgettingReport.objects.get(pk=job.result["forgetting_report"])
    assert report.backbone_id == grown.pk and len(report.rows) == 1
    assert len(job.metrics) == 2 and job.progress["epochs"] == 2


def counts() -> tuple[int, int, int]:
    return HeadVersion.objects.count(), BackboneVersion.objects.count(), ForgettingReport.objects.count()


def test_a_crash_while_registering_leaves_nothing_registered(alice, backbone, dataset, monkeypatch):
    before = counts()

    def broken(**kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("training.work.fine_tune.ForgettingReport.objects.create", broken)
    job = run(queued(alice, "fine_tune", backbone=backbone.pk, dataset=dataset.pk, task="t", epochs=1, warmup_epochs=1))
    assert job.status == Job.Status.FAILED and "RuntimeError: disk full" in job.error
    assert counts() == before and job.result == {}


def test_a_crash_recording_success_rolls_the_results_back(alice, backbone, dataset, monkeypatch):
    def broken(row, **kwargs):
        raise RuntimeError("connection lost")

    monkeypatch.setattr(common, "row_finish", broken)
    job = run(queued(alice, "train_head", backbone=backbone.pk, dataset=dataset.pk, task="t", epochs=1))
    assert job.status == Job.Status.FAILED and "connection lost" in job.error
    assert counts() == (0, 1, 0)


def test_a_cancel_requested_before_the_finish_registers_nothing(alice, backbone, dataset, monkeypatch):
    job = queued(alice, "train_head", backbone=backbone.pk, dataset=dataset.pk, task="t", epochs=1)
    real = common.head_artifact

    def cancel_meanwhile(head, **kwargs):  # the user cancels after the last batch
        Job.objects.filter(pk=job.pk).update(cancel_requested=True)
        return real(head, **kwargs)

    monkeypatch.setattr("training.work.train_head.head_artifact", cancel_meanwhile)
    job = run(job)
    assert job.status == Job.Status.CANCELLED and "Nothing was registered" in job.error
    assert counts() == (0, 1, 0)


def test_a_cancelled_job_stops_at_the_first_batch(alice, backbone, dataset):
    job = queued(alice, "train_head", backbone=backbone.pk, dataset=dataset.pk, task="t", epochs=50)
    Job.objects.filter(pk=job.pk).update(cancel_requested=True)
    job = run(job)
    assert job.status == Job.Status.CANCELLED and "before batch 1" in job.error
    assert job.metrics == [] and counts() == (0, 1, 0)


def test_a_job_reaped_while_training_registers_nothing_and_keeps_its_failure(alice, backbone, dataset, monkeypatch):
    job = queued(alice, "train_head", backbone=backbone.pk, dataset=dataset.pk, task="t", epochs=1)
    real = common.head_artifact

    def reaped_meanwhile(head, **kwargs):
        Job.objects.filter(pk=job.pk).update(status=Job.Status.FAILED, error="Worker lost: reaped")
        return real(head, **kwargs)

    monkeypatch.setattr("training.work.train_head.head_artifact", reaped_meanwhile)
    job = run(job)
    assert (job.status, job.error) == (Job.Status.FAILED, "Worker lost: reaped")
    assert counts() == (0, 1, 0)


def test_a_job_stored_with_bad_params_fails_with_what_is_wrong(alice, backbone):
    job = Job.objects.create(
        team=backbone.team, kind="train_head", params={"backbone": "abc", "head": 3}, created_by=alice
    )
    job = run(job)
    assert job.status == Job.Status.FAILED
    assert "backbone: must be an id" in job.error and "head: must be an object" in job.error
    assert counts() == (0, 1, 0)


def test_a_dataset_whose_labels_outgrow_a_stored_head_fails_the_job(alice, backbone, dataset):
    job = queued(alice, "train_head", backbone=backbone.pk, dataset=dataset.pk, task="t", epochs=1)
    Job.objects.filter(pk=job.pk).update(params={**job.params, "head": {"type": "dense", "units": 2}})
    job = run(job)
    assert job.status == Job.Status.FAILED and "use at least 3 units" in job.error
    assert counts() == (0, 1, 0)


def test_every_job_kind_has_a_runner():
    assert set(jobs.RUNNERS) == set(Job.Kind.values)
