"""Trial-prediction inputs on the web side (no worker): the manifest's backbone inputs, old and new,
and what POST /api/assemblies/{id}/predict/ accepts or refuses for two named inputs, a string input
and an old single-"input" manifest."""

import pytest

from assemblies.inputs import coerce_inputs, manifest_inputs
from assemblies.models import Prediction
from core.errors import ValidationError
from heads.models import HeadVersion
from tests.assemblies.manifests import TEXT_INPUT, TWO_INPUTS, as_old_single_input, fake_worker, with_inputs
from tests.view_helpers import assembly_row, backbone_row, head_row

pytestmark = pytest.mark.django_db

OLD_INPUT = [{"name": "inputs", "shape": [None, 8], "dtype": "float32"}]
MANIFESTS = {"two": TWO_INPUTS, "text": TEXT_INPUT, "old": None}


@pytest.fixture
def author(api_client_for):
    return api_client_for("alice")


@pytest.fixture
def assemblies(author):
    """Ready assemblies by kind of input: two (sentiment=0, 3 outputs; topic=1, 5), text (sentiment), old (topic)."""
    backbone = backbone_row(author.user)
    heads = [
        head_row(author.user, backbone, task="sentiment", status=HeadVersion.Status.APPROVED, output_width=3),
        head_row(author.user, backbone, task="topic", status=HeadVersion.Status.APPROVED, output_width=5),
    ]
    chosen = {"two": heads, "text": heads[:1], "old": heads[1:]}  # one assembly per set of heads
    built = {}
    for kind, inputs in MANIFESTS.items():
        assembly = assembly_row(author.user, backbone, chosen[kind])
        built[kind] = with_inputs(assembly, inputs) if inputs else as_old_single_input(assembly)
    return built


def test_manifest_inputs_reads_old_and_new_manifests(assemblies):
    assert manifest_inputs(assemblies["two"].manifest) == TWO_INPUTS
    assert manifest_inputs(assemblies["text"].manifest) == TEXT_INPUT
    old = assemblies["old"].manifest
    assert "inputs" not in old["backbone"] and manifest_inputs(old) == OLD_INPUT
    assert manifest_inputs({}) == [] and manifest_inputs({"backbone": {"name": "x"}}) == []


@pytest.mark.parametrize(
    ("kind", "inputs", "expected"),
    [
        (
            "two",
            {"token_ids": [[1] * 12, [2] * 12], "numeric": [[0.5] * 5, [-1] * 5]},
            {"token_ids": [[1] * 12, [2] * 12], "numeric": [[0.5] * 5, [-1.0] * 5]},
        ),
        # One example without the batch axis; whole floats are fine for an int input.
        ("two", {"numeric": [0] * 5, "token_ids": [3.0] * 12}, {"token_ids": [[3] * 12], "numeric": [[0.0] * 5]}),
        ("text", [["great movie"], ["bad"]], [["great movie"], ["bad"]]),
        ("text", ["great movie"], [["great movie"]]),
        ("old", [[1] * 8], [[1.0] * 8]),
        ("old", [0.5] * 8, [[0.5] * 8]),
    ],
    ids=["two-batch", "two-one-example", "text-batch", "text-one-example", "old-batch", "old-one-example"],
)
def test_coerce_inputs_accepts(assemblies, kind, inputs, expected):
    coerced = coerce_inputs(assemblies[kind], inputs)
    assert coerced == expected
    if kind == "two":
        assert all(type(v) is int for row in coerced["token_ids"] for v in row)
        assert all(type(v) is float for row in coerced["numeric"] for v in row)


TOKENS = [1] * 12
NUMBERS = [0.5] * 5


@pytest.mark.parametrize(
    ("kind", "inputs", "fragments"),
    [
        ("two", [TOKENS], ["takes 2 inputs", "object by input name", "'token_ids' int32 [rows, 12]",
                           "'numeric' float32 [rows, 5]", "received a list",
                           '{"token_ids": [[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]], "numeric": [[0.0, 0.0']),
        ("two", {"token_ids": [TOKENS]}, ["'inputs' is missing 'numeric'", "Expected every backbone input by name"]),
        ("two", {"token_ids": [TOKENS], "numeric": [NUMBERS], "task_id": 1, "extra": [1]},
         ["has unknown names 'task_id', 'extra'", "Give the task next to 'inputs'"]),
        ("two", {"token_ids": [[1, 2, 3]], "numeric": [NUMBERS]},
         ["Input 'token_ids' has shape [1, 3]; expected one example of shape [12] or a batch [rows, 12]"]),
        ("two", {"token_ids": [[1.5] + TOKENS[1:]], "numeric": [NUMBERS]},
         ["Input 'token_ids' is int32 and takes whole numbers; received 1.5"]),
        ("two", {"token_ids": [[2**31] + TOKENS[1:]], "numeric": [NUMBERS]},
         ["Input 'token_ids' holds 2147483648, outside the int32 range [-2147483648, 2147483647]"]),
        ("two", {"token_ids": [TOKENS[:3] + ["7"] + TOKENS[4:]], "numeric": [NUMBERS]},
         ['must hold only numbers (int32 [rows, 12]); found "7" (a string) at token_ids[0][3]', "without quotes"]),
        ("two", {"token_ids": [TOKENS], "numeric": [NUMBERS, NUMBERS]},
         ["different numbers of rows: 'token_ids' 1, 'numeric' 2", "same number of rows"]),
        ("two", {"token_ids": [TOKENS, TOKENS[:4]], "numeric": [NUMBERS, NUMBERS]},
         ["Input 'token_ids' is ragged: token_ids[0] has shape [12] but token_ids[1] has shape [4]"]),
        ("two", {"token_ids": [TOKENS], "numeric": [[float("nan")] * 5]}, ["Input 'numeric' contains NaN or infinity"]),
        ("two", {"token_ids": [TOKENS], "numeric": [[None] * 5]},
         ["Input 'numeric' must hold only numbers (float32 [rows, 5]); found null at numeric[0][0]"]),
        ("text", [["great movie"], [3]],
         ["'inputs' must hold only strings (string [rows, 1]); found 3 (a number) at inputs[1][0]", "Quote every"]),
        ("text", ["great movie", "bad"],
         ["'inputs' has shape [2]; expected one example of shape [1]", 'Wrap each string in its own list']),
        ("text", {"inputs": [["great movie"]]},
         ["takes one input, 'inputs' string [rows, 1]", "not an object",
          '{"task_id": 0, "inputs": [["a great movie"]]}']),
        ("old", [[1, 2, 3], [4, 5, 6]],
         ["'inputs' has shape [2, 3]; expected one example of shape [8] or a batch [rows, 8]"]),
        ("old", [[0.0] * 8] * 257, ["Send between 1 and 256 rows; received 257"]),
        ("old", [["0.5"] * 8], ['must hold only numbers (float32 [rows, 8]); found "0.5" (a string) at inputs[0][0]']),
        ("old", [[2**70] * 8], ["beyond the 64-bit range"]),
    ],
    ids=[
        "two-not-an-object", "two-missing", "two-unknown", "two-shape", "two-fraction", "two-int32-range",
        "two-text-in-ints", "two-rows-differ", "two-ragged", "two-nan", "two-null", "text-number", "text-flat",
        "text-object", "old-shape", "old-too-many-rows", "old-text", "old-huge-int",
    ],
)  # fmt: skip
def test_coerce_inputs_refuses_with_what_was_expected(assemblies, kind, inputs, fragments):
    with pytest.raises(ValidationError) as raised:
        coerce_inputs(assemblies[kind], inputs)
    for fragment in fragments:
        assert fragment in raised.value.message
    assert raised.value.detail == {"expected_inputs": MANIFESTS[kind] or OLD_INPUT}


def test_predict_api_refuses_bad_inputs_and_stores_nothing(author, assemblies):
    two = assemblies["two"]
    url = f"/api/assemblies/{two.pk}/predict/"
    response = author.post(url, {"task": "topic", "inputs": {"token_ids": [TOKENS]}}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid" and "'inputs' is missing 'numeric'" in error["message"]
    assert error["detail"] == {"expected_inputs": TWO_INPUTS}
    as_list = author.post(url, {"task_id": 0, "inputs": [TOKENS]}, format="json")
    assert as_list.status_code == 400 and "object by input name" in as_list.json()["error"]["message"]
    text = author.post(
        f"/api/assemblies/{assemblies['text'].pk}/predict/", {"task_id": 0, "inputs": [[1], [2]]}, format="json"
    )
    assert text.status_code == 400 and "must hold only strings" in text.json()["error"]["message"]
    assert not Prediction.objects.exists()


def test_predict_api_stores_named_inputs_as_a_dict_and_one_input_as_a_list(author, assemblies, monkeypatch):
    seen = fake_worker(monkeypatch)
    two = author.post(
        f"/api/assemblies/{assemblies['two'].pk}/predict/",
        {"task": "topic", "inputs": {"numeric": [NUMBERS, NUMBERS], "token_ids": [TOKENS, TOKENS]}},
        format="json",
    )
    assert two.status_code == 200, two.json()
    assert two.json()["outputs"] == [[0.25] * 5] * 2 and two.json()["task_id"] == 1
    text = author.post(
        f"/api/assemblies/{assemblies['text'].pk}/predict/", {"task_id": 0, "inputs": ["great movie"]}, format="json"
    )
    assert text.status_code == 200, text.json()
    assert seen == [{"token_ids": [TOKENS, TOKENS], "numeric": [NUMBERS, NUMBERS]}, [["great movie"]]]
    assert [p.inputs for p in Prediction.objects.order_by("pk")] == seen
