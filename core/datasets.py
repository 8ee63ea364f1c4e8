"""Training datasets, as apps that may not import training read them (an export's argmax agreement).

training owns datasets; assemblies sits beside it in the layers (``training | assemblies``), so it
may not import training. As artifacts registers its storage check with core
(core.services.health_storage_check_register), training registers a :class:`DatasetReader` here
when Django starts (training.apps, training.dataset_reader), and assemblies asks core for it:

- ``fit_problem(*, dataset_id, team_id, backbone_id) -> str``: why the dataset cannot be read
  through that backbone ("" when it can): it must exist in the team, be ready, and fit the
  backbone's inputs (training's one fit rule). Web side; imports no TensorFlow.
- ``read(*, dataset_id, backbone_id, max_rows) -> DatasetRows``: worker side: the rows as the
  backbone takes them (its validation split when it has one), at most ``max_rows``; raises
  :class:`DatasetReadError` saying why when they cannot be read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class DatasetReadError(Exception):
    """The dataset could not be read through the backbone; the message says why and what to do."""


@dataclass(frozen=True)
class DatasetRows:
    """Rows of a dataset as a backbone takes them.

    Attributes:
        inputs: one array (a one-input backbone) or ``{backbone input name: array}``.
        labels: integer class ids per row for a "classes" dataset, else None (regression targets).
        name: the dataset's name; split: "validation" or "all"; total_rows: rows in that split.
    """

    inputs: Any
    labels: Any
    name: str
    split: str
    total_rows: int


@dataclass(frozen=True)
class DatasetReader:
    """What training lends to the apps beside it: check a dataset against a backbone, read its rows."""

    fit_problem: Callable[..., str]
    read: Callable[..., DatasetRows]


_readers: list[DatasetReader] = []


def dataset_reader_register(reader: DatasetReader) -> None:
    """Register the dataset reader (called once, by training when Django starts)."""
    _readers[:] = [reader]


def dataset_reader() -> DatasetReader:
    """Return the registered dataset reader; RuntimeError when training is not installed."""
    if not _readers:
        raise RuntimeError("no dataset reader is registered: is 'training' in INSTALLED_APPS?")
    return _readers[0]
