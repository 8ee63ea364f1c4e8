"""Typed parameters of training jobs: one spec per job kind, and the head spec they share.

A job's parameters come from three places: the JSON body of ``POST /api/jobs/``, a dashboard
form, and a stored job (retried, or run by a worker). All of them go through
:func:`job_spec_parse`, which returns a frozen dataclass (every field typed, bounded, with its
default filled in) or raises :class:`JobSpecError` naming each bad field, e.g.
``{"head": {"dropout": ["must be a number in [0, 1); got 'x'"]}}``. ``spec.to_params()`` is
the JSON stored on the job; parsing it again gives the same spec.

Here are only the rules that need nothing but the parameters. Rules that need the database
(the dataset is ready and fits the backbone, labels fit the head, a layer exists) run in
``training.services.job_create``, which fails the job at once with what to change.

This package is the one place callers import from; its modules are:

    kit.py      the field kit: rules (type, bounds, choices), spec_field, the Spec base, errors
    jobs.py     the specs of each job kind (and the head they build), job_spec_parse
    stored.py   tolerant readers of what a stored job's params name, for pages listing old jobs
"""

from training.specs.jobs import (
    JOB_SPECS,
    EarlyStoppingSpec,
    EvaluateHeadSpec,
    FineTuneSpec,
    GrowBackboneSpec,
    GrowTrainSpec,
    HeadSpec,
    InsertSpec,
    JobSpec,
    TaskEntrySpec,
    TrainHeadSpec,
    TrainHeadsSpec,
    WidenSpec,
    job_spec_parse,
)
from training.specs.kit import NON_FIELD_ERRORS, JobSpecError, Spec, describe_errors
from training.specs.stored import stored_backbone_id, stored_dataset_ids, stored_summary

__all__ = [
    "JOB_SPECS",
    "NON_FIELD_ERRORS",
    "EarlyStoppingSpec",
    "EvaluateHeadSpec",
    "FineTuneSpec",
    "GrowBackboneSpec",
    "GrowTrainSpec",
    "HeadSpec",
    "InsertSpec",
    "JobSpec",
    "JobSpecError",
    "Spec",
    "TaskEntrySpec",
    "TrainHeadSpec",
    "TrainHeadsSpec",
    "WidenSpec",
    "describe_errors",
    "job_spec_parse",
    "stored_backbone_id",
    "stored_dataset_ids",
    "stored_summary",
]
