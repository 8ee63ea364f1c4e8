"""training's dataset reader, registered with core so that apps beside it can use datasets.

assemblies may not import training (they are siblings in the layers), yet an export reports its
argmax agreement on a dataset named in the request. training.apps registers :data:`READER` with
core.datasets when Django starts; the export's request (web) and worker ask core for it. The fit
rule is training's one rule (training.services.dataset_fit_problem, the one that refuses jobs),
and the rows are loaded as a job loads them (training.work.common.load_dataset).
"""

from backbones.models import BackboneVersion
from core.datasets import DatasetReader, DatasetReadError, DatasetRows
from training.models import Dataset
from training.services import dataset_fit_problem


def fit_problem(*, dataset_id: int, team_id: int, backbone_id: int) -> str:
    """Return why dataset `dataset_id` cannot be read through backbone `backbone_id`, or "" when it can.

    The dataset must be in the team (one answer for "missing" and "another team's"), ready, and fit
    the backbone's inputs.
    """
    dataset = Dataset.objects.filter(pk=dataset_id, team_id=team_id).first()
    if dataset is None:
        return (
            f"Dataset {dataset_id} was not found in this assembly's team. GET /api/datasets/ lists the team's "
            "datasets; name one of them, or leave `dataset` out."
        )
    if dataset.status != Dataset.Status.READY:
        return (
            f"Dataset {dataset_id} ('{dataset.name}') is '{dataset.status}', not ready. Wait until it is validated "
            f"(GET /api/datasets/{dataset_id}/), or name a ready dataset."
        )
    backbone = BackboneVersion.objects.filter(pk=backbone_id).first()
    if backbone is None:
        return f"Backbone version {backbone_id} was not found, so dataset {dataset_id} cannot be checked against it."
    problem = dataset_fit_problem(dataset, backbone)
    if problem:
        return f"Dataset {dataset_id} does not fit the assembly's backbone: {problem}"
    return ""


def read(*, dataset_id: int, backbone_id: int, max_rows: int) -> DatasetRows:
    """Return the dataset's rows (its validation split when it has one, else all) as the backbone takes them.

    Raises DatasetReadError when the dataset is gone or its arrays do not fit the backbone.
    """
    from training.work.common import load_dataset
    from training.work.dataset_zips import DatasetError
    from training.work.inputs import first_rows, num_examples

    backbone = BackboneVersion.objects.filter(pk=backbone_id).first()
    if backbone is None or not Dataset.objects.filter(pk=dataset_id).exists():
        raise DatasetReadError(f"Dataset {dataset_id} or backbone version {backbone_id} no longer exists.")
    try:
        dataset, data = load_dataset(dataset_id, backbone)
    except DatasetError as exc:
        raise DatasetReadError(f"Dataset {dataset_id} could not be read through {backbone.label}: {exc}") from exc
    split = "validation" if "x_val" in data else "all"
    x, y = (data["x_val"], data["y_val"]) if split == "validation" else (data["x"], data["y"])
    count = min(int(max_rows), num_examples(x))
    labels = y[:count].astype("int64").reshape(-1) if dataset.target == "classes" else None
    return DatasetRows(
        inputs=first_rows(x, count), labels=labels, name=dataset.name, split=split, total_rows=num_examples(x)
    )


READER = DatasetReader(fit_problem=fit_problem, read=read)
