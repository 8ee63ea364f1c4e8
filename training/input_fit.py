"""The one rule saying whether a dataset's inputs fit a backbone's inputs (plain Python, no arrays).

Both sides are lists of input descriptions: the dataset's ``inputs`` (``{"name", "kind", "shape",
"dtype"}``, kind "string" | "number" | "token_ids") and the backbone's ``spec["inputs"]``
(``{"name", "shape", "dtype"}``). The web side (training.services.dataset_fit_problem: the job
forms and job_create) and the worker (training.work.inputs, which reshapes, pads and casts the
arrays) both pair and check inputs here, so a job that is queued is one the worker can feed.

Pairing: a dataset with one unnamed input ``x`` feeds a one-input backbone whatever its input's
name; otherwise inputs pair by name and the names must be the same on both sides. Per pair:
- text feeds only a string input; numbers and token ids feed only numeric inputs (cast to the
  input's dtype by the worker);
- one value per row (shape ``[]``) fits a backbone input of shape ``[1]`` (or ``[None]``);
- token ids of length L fit a fixed length M >= L (zero-padded at the end) or ``None``; longer
  rows are refused;
- other shapes must be equal (``None`` in the backbone matches any length).
"""

from __future__ import annotations

UNNAMED_INPUT = "x"


def describe_inputs(inputs: list[dict]) -> str:
    """Return ``"text (string, []) and numeric (float32, [3])"`` for a list of input descriptions."""
    parts = [f"{spec.get('name')} ({spec.get('dtype')}, {list(spec.get('shape') or [])})" for spec in inputs]
    if not parts:
        return "no inputs"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def pair_inputs(dataset_inputs: list[dict], backbone_inputs: list[dict]) -> tuple[list[tuple[dict, dict]], str]:
    """Return ``([(dataset input, backbone input), ...], "")``, or ``([], problem)`` when names do not pair."""
    if len(dataset_inputs) == 1 and len(backbone_inputs) == 1 and dataset_inputs[0].get("name") == UNNAMED_INPUT:
        return [(dataset_inputs[0], backbone_inputs[0])], ""
    by_name = {spec.get("name"): spec for spec in dataset_inputs}
    wanted = [spec.get("name") for spec in backbone_inputs]
    if set(by_name) != set(wanted):
        missing = [name for name in wanted if name not in by_name]
        extra = sorted(name for name in by_name if name not in wanted)
        said = []
        if missing:
            said.append(f"no input named {', '.join(repr(name) for name in missing)}")
        if extra:
            said.append(f"inputs the backbone does not take: {', '.join(repr(name) for name in extra)}")
        how = (
            "Map the columns to the backbone's input names (the `columns` field's \"inputs\"), or name the .npz "
            "arrays x_<input name>"
        )
        if len(backbone_inputs) == 1:
            how += ", or give one unnamed input x"
        return [], f"The dataset has {'; '.join(said)}. {how}."
    return [(by_name[spec.get("name")], spec) for spec in backbone_inputs], ""


def input_pair_problem(data: dict, model: dict) -> str:
    """Return why one dataset input cannot feed one backbone input, or "" when it can."""
    data_name, model_name = data.get("name"), model.get("name")
    what = f"Input {data_name!r}" + (f" (for the backbone's {model_name!r})" if data_name != model_name else "")
    kind, model_dtype = data.get("kind"), str(model.get("dtype"))
    if model_dtype == "string" and kind != "string":
        return (
            f"{what} holds {'token ids' if kind == 'token_ids' else 'numbers'}, but the backbone's {model_name!r} "
            "takes text (strings). Give it a text column."
        )
    if model_dtype != "string" and kind == "string":
        return (
            f"{what} holds text, but the backbone's {model_name!r} takes {model_dtype} values. Give it "
            "numbers or token ids, or pick a backbone that takes text (a string input with TextVectorization)."
        )
    return _shape_problem(what, data, model)


def inputs_fit_problem(dataset_inputs: list[dict], backbone_inputs: list[dict]) -> str:
    """Return the first reason the dataset's inputs cannot feed the backbone's, or "" when they fit."""
    pairs, problem = pair_inputs(dataset_inputs, backbone_inputs)
    if problem:
        return problem
    for data, model in pairs:
        problem = input_pair_problem(data, model)
        if problem:
            return problem
    return ""


def _shape_problem(what: str, data: dict, model: dict) -> str:
    data_shape = list(data.get("shape") or [])
    model_shape = list(model.get("shape") or [])
    if data_shape == [] and (model_shape == [] or (len(model_shape) == 1 and model_shape[0] in (1, None))):
        return ""
    if len(data_shape) == len(model_shape):
        for index, (have, want) in enumerate(zip(data_shape, model_shape, strict=True)):
            if want is None or have == want:
                continue
            if data.get("kind") == "token_ids" and index == len(model_shape) - 1 and have is not None and have < want:
                continue  # padded with 0 at the end
            if data.get("kind") == "token_ids" and index == len(model_shape) - 1:
                return (
                    f"{what} holds rows of up to {have} token ids, but the backbone's {model.get('name')!r} takes "
                    f"at most {want}. Shorten the rows to {want} token ids, or pick a backbone with a longer input."
                )
            break
        else:
            return ""
    return (
        f"{what} has rows of shape {data_shape}, but the backbone's {model.get('name')!r} takes rows of shape "
        f"{model_shape}. Reshape the data to {model_shape}, or pick a backbone whose input matches."
    )
