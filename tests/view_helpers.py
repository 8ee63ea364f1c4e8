"""Registry rows for fast dashboard view tests, created through the services without a worker."""

from heads.models import HeadVersion
from heads.services import head_version_create, task_get_or_create
from modelhub.artifacts.services import blob_store_bytes
from modelhub.backbones.models import BackboneVersion
from modelhub.backbones.services import backbone_version_create
from modelhub.teams.models import Team

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
