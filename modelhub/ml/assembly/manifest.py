"""The assembly's contract: signature and tensor names, the heads to assemble, and the manifest.

The manifest (``assets/manifest.json``) lists task index, task name, head version, sha256,
output width and labels, and how the SavedModel is served. :func:`build_manifest` also checks
that every head fits the backbone before anything is built.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import keras

from modelhub.ml.assembly.trunk import AssemblyBranch, check_branches, plan_branches
from modelhub.ml.branches import Trunk
from modelhub.ml.errors import AssemblyError, FeatureShapeMismatchError
from modelhub.ml.head_weights import PackedDenseHead
from modelhub.ml.inspect import check_head_compatible, input_name

FORMAT_VERSION = 1
MANIFEST_PATH = "assets/manifest.json"
SERVING_KEY = "serving_default"
BY_TASK_KEY = "serving_by_task"
INPUTS_KEY = "inputs"
TASK_ID_KEY = "task_id"
TASK_KEY = "task"
OUTPUTS_KEY = "outputs"
WIDTH_KEY = "output_width"
RESERVED_INPUT_NAMES = frozenset({TASK_ID_KEY, TASK_KEY})
SIGNATURE_KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")


@dataclass(frozen=True)
class AssemblyHead:
    """One head to assemble.

    Attributes:
        task: the task slug; it names the head's own signature.
        model: the head: a Keras model whose single input is the backbone's features, or a
            :class:`PackedDenseHead` (a Dense chain whose weights are read on demand).
        version: the head version number.
        sha256: the head artifact's checksum (recorded in the manifest).
        labels: class labels, or None.
        branch: the backbone layers the head owns above a branch point, or None.
    """

    task: str
    model: keras.Model | PackedDenseHead
    version: int
    sha256: str
    labels: list[str] | None = field(default=None)
    branch: AssemblyBranch | None = field(default=None)


def build_manifest(
    *,
    backbone: keras.Model,
    heads: Sequence[AssemblyHead],
    backbone_info: dict[str, Any],
    per_head_signatures: bool = False,
    trunk: Trunk | None = None,
) -> dict[str, Any]:
    """Return the manifest for an assembly, after checking the heads fit the backbone.

    Raises:
        AssemblyError: no heads, duplicate or invalid task slugs, multi-output heads,
            or a head whose input does not match the feature shape.
    """
    if len(backbone.outputs) != 1:
        raise AssemblyError(
            f"Expected a backbone with one output (the features), '{backbone.name}' has {len(backbone.outputs)}."
        )
    inputs = serving_inputs(backbone)
    if not heads:
        raise AssemblyError("Expected at least one head, received none. Approve a head first.")
    missing = {"name", "version", "sha256"} - set(backbone_info)
    if missing:
        raise AssemblyError(f"Expected backbone_info with name, version and sha256, missing {sorted(missing)}.")
    feature_shape = [None if d is None else int(d) for d in backbone.outputs[0].shape[1:]]
    seen: set[str] = set()
    entries = []
    for task_id, head in enumerate(heads):
        # A per-task signature is named after its task: those slugs may not shadow the shared ones.
        clashes = per_head_signatures and head.task in (SERVING_KEY, BY_TASK_KEY)
        if not SIGNATURE_KEY_PATTERN.fullmatch(head.task) or clashes:
            raise AssemblyError(
                f"Expected a task slug of letters, digits, '-' and '_' (with per-task signatures, not "
                f"'{SERVING_KEY}' or '{BY_TASK_KEY}'), "
                f"received '{head.task}'. Rename the task."
            )
        if head.task in seen:
            raise AssemblyError(f"Expected each task once, received '{head.task}' twice. Pick one head version.")
        seen.add(head.task)
        out_shape = _head_output_shape(head, feature_shape, backbone_info)
        entries.append(
            {
                "task_id": task_id,
                "task": head.task,
                "signature": head.task,
                "version": int(head.version),
                "sha256": head.sha256,
                "output_width": int(out_shape[0]),
                "labels": list(head.labels) if head.labels is not None else None,
                "branch": _branch_entry(head.branch),
            }
        )
    described = [{key: entry[key] for key in ("name", "shape", "dtype")} for entry in inputs]
    backbone_entry = {
        "name": backbone_info["name"],
        "version": int(backbone_info["version"]),
        "sha256": backbone_info["sha256"],
        "inputs": described,
        "feature_shape": feature_shape,
    }
    if len(described) == 1:
        backbone_entry["input"] = described[0]
    branches = [head.branch for head in heads]
    if any(branch is not None for branch in branches):
        if trunk is None:
            raise AssemblyError("Expected a trunk (the backbone cut at the branch points) for heads with branches.")
        plan = plan_branches(branches, trunk)
        check_branches(plan, trunk, feature_shape, [head.task for head in heads])
        backbone_entry["trunk"] = {
            "branch_points": list(trunk.points),
            "distinct_branches": len(plan.branches),
            "segments": len(trunk.segments),
        }
    return {
        "format_version": FORMAT_VERSION,
        "backbone": backbone_entry,
        "serving": {
            "signature": SERVING_KEY,
            "inputs": [entry["name"] for entry in described] + [TASK_ID_KEY],
            "outputs": [OUTPUTS_KEY, WIDTH_KEY],
            "max_width": max(entry["output_width"] for entry in entries),
            "per_head_signatures": per_head_signatures,
            "by_task": {
                "signature": BY_TASK_KEY,
                "inputs": [entry["name"] for entry in described] + [TASK_KEY],
                "outputs": [OUTPUTS_KEY, WIDTH_KEY],
            },
        },
        "heads": entries,
    }


def _branch_entry(branch: AssemblyBranch | None) -> dict[str, Any] | None:
    if branch is None:
        return None
    return {
        "after_layer": branch.after_layer,
        "layers": len(branch.layers),
        "params": branch.params,
        "sha256": branch.sha256,
    }


def _head_output_shape(
    head: AssemblyHead, feature_shape: list[int | None], backbone_info: dict[str, Any]
) -> list[int | None]:
    """Check that a head takes the features and outputs one vector; return its output shape."""
    label = f"backbone '{backbone_info['name']}' v{backbone_info['version']}"
    if isinstance(head.model, PackedDenseHead):
        if feature_shape != [head.model.input_width]:
            raise AssemblyError(
                f"Head for task '{head.task}': expected features of shape {[None, *feature_shape]} from {label}, "
                f"the head takes [None, {head.model.input_width}]. Train or cut the head on this backbone."
            )
        return [head.model.width]
    try:
        check_head_compatible(head.model, feature_shape, backbone_label=label)
    except FeatureShapeMismatchError as error:
        raise AssemblyError(f"Head for task '{head.task}': {error}") from error
    if len(head.model.outputs) != 1:
        raise AssemblyError(
            f"Expected head '{head.task}' to have one output, it has "
            f"{len(head.model.outputs)}. Split it into one head per output."
        )
    out_shape = list(head.model.outputs[0].shape[1:])
    if len(out_shape) != 1 or out_shape[0] is None:
        raise AssemblyError(
            f"Expected head '{head.task}' to output a vector [batch, width], it outputs "
            f"{[None] + out_shape}. Add a Flatten or Reshape layer to the head."
        )
    return out_shape


def serving_inputs(backbone: keras.Model) -> list[dict[str, Any]]:
    """Return the SavedModel's backbone inputs: ``[{"name", "keras_name", "shape", "dtype"}]``.

    A single-input backbone is served as ``inputs``; several inputs keep their own names.

    Raises:
        AssemblyError: an input name that cannot be a signature argument or clashes
            with ``task_id``.
    """
    entries = []
    for tensor in backbone.inputs:
        keras_name = input_name(tensor, default=INPUTS_KEY)
        entries.append(
            {
                "name": keras_name,
                "keras_name": keras_name,
                "shape": [None] + [None if d is None else int(d) for d in tensor.shape[1:]],
                "dtype": str(tensor.dtype),
            }
        )
    if len(entries) == 1:
        entries[0]["name"] = INPUTS_KEY
        return entries
    for entry in entries:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", entry["name"]) or entry["name"] in RESERVED_INPUT_NAMES:
            raise AssemblyError(
                f"Expected backbone input names made of letters, digits and '_' (not {sorted(RESERVED_INPUT_NAMES)}), "
                f"received '{entry['name']}'. Rename the keras.Input and save the model again."
            )
    return entries


def manifest_json(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"
