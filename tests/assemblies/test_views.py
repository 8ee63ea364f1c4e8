"""Assembly dashboard pages with Django's test client (no worker): team scoping, the builder's
head choice, task_id table and size estimate, building and deduplicating through the form, the
detail page, and the "try it" panel's input parsing (pickled or misshaped .npy, random, image,
typed text) for single, string and several named backbone inputs, with the usage snippets."""

import html
import io
import json
import re

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from assemblies import views as assembly_views
from assemblies.forms import RANDOM_WORDS, TryItForm
from assemblies.models import Assembly, Prediction
from assemblies.snippets import usage_snippets
from heads.models import HeadVersion
from tests.assemblies.manifests import TEXT_INPUT, TWO_INPUTS, as_old_single_input, fake_worker, with_inputs
from tests.view_helpers import assembly_row, backbone_row, head_row

pytestmark = pytest.mark.django_db

APPROVED = HeadVersion.Status.APPROVED


@pytest.fixture
def alice(make_member):
    return make_member("alice", team="vision", role="member")[0]


@pytest.fixture
def registry(alice):
    """Backbone `tiny` with approved sentiment v1+v2 and topic, a draft box head; another backbone."""
    backbone = backbone_row(alice)
    other = backbone_row(alice, name="other")
    heads = {
        "sentiment1": head_row(alice, backbone, task="sentiment", status=APPROVED, labels=["neg", "pos"]),
        "sentiment2": head_row(
            alice, backbone, task="sentiment", status=APPROVED, labels=["neg", "neu", "pos"], description="x" * 700
        ),
        "topic": head_row(alice, backbone, task="topic", status=APPROVED, output_width=5, description="y" * 300),
        "box": head_row(alice, backbone, task="box", status=HeadVersion.Status.DRAFT, output_width=4),
        "elsewhere": head_row(alice, other, task="speech", status=APPROVED),
    }
    return backbone, other, heads


def section(page: str, marker: str) -> str:
    """Return the HTML from `marker` to the end of its <section> / <table>."""
    start = page.index(marker)
    ends = [page.find(end, start) for end in ("</section>", "</table>")]
    return page[start : min(e for e in ends if e > 0)]


def test_list_and_pages_are_scoped_to_the_team(client, alice, make_member, registry):
    backbone, _, heads = registry
    mine = assembly_row(alice, backbone, [heads["topic"]], name="mine-prod")
    outsider, _ = make_member("mallory", team="audio", role="admin")
    foreign_backbone = backbone_row(outsider, team="audio")
    foreign = assembly_row(
        outsider, foreign_backbone, [head_row(outsider, foreign_backbone, task="podcast", status=APPROVED)],
        name="secret-audio",
    )  # fmt: skip

    assert client.get("/assemblies/").status_code == 302  # login required
    assert client.get(f"/assemblies/{mine.pk}/")["Location"].startswith("/login/")
    client.force_login(alice)
    listing = client.get("/assemblies/").content.decode()
    assert "mine-prod" in listing and f"/assemblies/{mine.pk}/" in listing
    assert "secret-audio" not in listing
    assert client.get(f"/assemblies/{foreign.pk}/").status_code == 404
    assert client.post(f"/assemblies/{foreign.pk}/try/", {"task_id": 0, "source": "random"}).status_code == 404
    assert not Prediction.objects.exists()
    # The builder never offers another team's backbone, even when asked by id.
    builder = client.get(f"/assemblies/new/?backbone={foreign_backbone.pk}").content.decode()
    assert "podcast" not in builder and f'value="{foreign_backbone.pk}"' not in builder


def test_builder_offers_only_approved_heads_of_the_chosen_backbone(client, alice, registry):
    backbone, other, heads = registry
    client.force_login(alice)
    page = client.get(f"/assemblies/new/?backbone={backbone.pk}").content.decode()
    table = section(page, 'id="head-table"')
    for key in ("sentiment1", "sentiment2", "topic"):
        assert f'value="{heads[key].pk}"' in table
    assert f'value="{heads["box"].pk}"' not in table  # a draft
    assert f'value="{heads["elsewhere"].pk}"' not in table  # on another backbone
    checked = set(re.findall(r'name="heads" value="(\d+)"[^>]*checked', table))
    assert checked == {str(heads["sentiment2"].pk), str(heads["topic"].pk)}  # the latest approved per task
    assert 'id="select-all"' in table and 'id="head-filter"' in page

    # task_id table: heads sorted by task slug, numbered from 0 (as assemblies.services orders them).
    task_rows = re.findall(r'<td class="mono">(\d+)</td><td>([\w-]+) <span class="muted small">v(\d+)', page)
    assert task_rows == [("0", "sentiment", "2"), ("1", "topic", "1")]

    # Size: backbone once + heads, against one full model (backbone + head) per head.
    backbone_bytes = backbone.blob.size_bytes
    head_bytes = [heads["sentiment2"].blob.size_bytes, heads["topic"].blob.size_bytes]
    merged = backbone_bytes + sum(head_bytes)
    separate = sum(backbone_bytes + size for size in head_bytes)
    sizes = section(page, 'id="size-comparison"')
    assert f'id="merged-bytes" data-bytes="{merged}"' in sizes
    assert f'id="separate-bytes" data-bytes="{separate}"' in sizes
    assert f">{separate / merged:.2f}×<" in sizes
    assert '<span id="num-heads">2</span> separate models' in sizes

    other_page = client.get(f"/assemblies/new/?backbone={other.pk}").content.decode()
    other_table = section(other_page, 'id="head-table"')
    assert f'value="{heads["elsewhere"].pk}"' in other_table
    assert f'value="{heads["sentiment2"].pk}"' not in other_table


def test_builder_post_creates_the_assembly_and_a_duplicate_redirects_to_it(client, alice, registry):
    backbone, _, heads = registry
    client.force_login(alice)
    chosen = [heads["topic"].pk, heads["sentiment1"].pk]
    response = client.post("/assemblies/new/", {"backbone": backbone.pk, "heads": chosen, "name": "reviews"})
    assembly = Assembly.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/assemblies/{assembly.pk}/"
    assert (assembly.name, assembly.status, assembly.created_by) == ("reviews", "queued", alice)
    assert [(e.task_id, e.head_id) for e in assembly.entries.all()] == [
        (0, heads["sentiment1"].pk),
        (1, heads["topic"].pk),
    ]
    detail = client.get(response["Location"]).content.decode()
    assert 'data-poll-status="queued"' in detail and 'data-poll-pending="queued building verifying"' in detail
    assert "Assembly queued: 2 heads" in detail

    again = client.post("/assemblies/new/", {"backbone": backbone.pk, "heads": list(reversed(chosen))}, follow=True)
    assert again.redirect_chain == [(f"/assemblies/{assembly.pk}/", 302)]
    assert "already assembled" in again.content.decode()
    assert Assembly.objects.count() == 1


def test_builder_task_signatures_box_is_off_by_default_and_makes_another_assembly(client, alice, registry):
    backbone, _, heads = registry
    client.force_login(alice)
    page = client.get(f"/assemblies/new/?backbone={backbone.pk}").content.decode()
    assert 'name="task_signatures"' in page and "62 KB" in page and "0.4 s" in page
    assert 'name="task_signatures" checked' not in page
    chosen = [heads["topic"].pk]
    client.post("/assemblies/new/", {"backbone": backbone.pk, "heads": chosen})
    client.post("/assemblies/new/", {"backbone": backbone.pk, "heads": chosen, "task_signatures": "on"})
    assert sorted(Assembly.objects.values_list("task_signatures", flat=True)) == [False, True]


def test_builder_shows_service_and_form_errors_as_flash(client, alice, registry):
    backbone, _, heads = registry
    client.force_login(alice)
    both_versions = [heads["sentiment1"].pk, heads["sentiment2"].pk]
    page = client.post("/assemblies/new/", {"backbone": backbone.pk, "heads": both_versions}).content.decode()
    assert "flash-error" in page and "Pick one version per task" in page
    draft = client.post("/assemblies/new/", {"backbone": backbone.pk, "heads": [heads["box"].pk]}).content.decode()
    assert "flash-error" in draft and "Select a valid choice" in draft
    empty = client.post("/assemblies/new/", {"backbone": backbone.pk}).content.decode()
    assert "Tick at least one approved head" in empty
    assert not Assembly.objects.exists()


def test_detail_shows_tasks_verification_download_and_snippets(client, alice, registry):
    backbone, _, heads = registry
    assembly = assembly_row(alice, backbone, [heads["sentiment2"], heads["topic"]], task_signatures=True)
    client.force_login(alice)
    page = client.get(f"/assemblies/{assembly.pk}/").content.decode()
    tasks = section(page, 'id="task-table"')
    assert "sentiment" in tasks and "neg, neu, pos" in tasks and f"/heads/{heads['topic'].pk}/" in tasks
    verification = section(page, 'id="verification-table"')
    figures = [f"{check['max_abs_diff']:.2e}" for check in assembly.verification["heads"]]
    assert len(figures) == 2 and all(figure in verification for figure in figures), (figures, verification)
    assert "pill-no" not in verification
    assert 'id="verification-result">passed' in page
    assert f'href="/api/assemblies/{assembly.pk}/download/"' in page
    assert f'value="{assembly.blob.sha256}"' in page
    assert f"{assembly.blob.size_bytes} bytes" in page and "4321 bytes unzipped" in page
    python = html.unescape(section(page, 'id="python-snippet"'))
    assert "tf.saved_model.load" in python and 'model.signatures["serving_default"]' in python
    assert "task_id=tf.constant([1, 1], tf.int32)" in python and 'model.signatures["topic"]' in python
    rest = json.loads(html.unescape(page.split('id="rest-body">', 1)[1].split("</pre>", 1)[0]))
    assert rest == {"signature_name": "serving_default", "inputs": {"inputs": [[0.0] * 8], "task_id": [1]}}
    assert "Upload an image" not in page  # rank-1 input: no image option

    failed = assembly_row(alice, backbone, [heads["sentiment1"]], status=Assembly.Status.FAILED)
    Assembly.objects.filter(pk=failed.pk).update(error="Head 'sentiment' differs by 0.3 (> 1e-05).")
    failed_page = client.get(f"/assemblies/{failed.pk}/").content.decode()
    assert "differs by 0.3" in failed_page and 'id="btn-download"' not in failed_page
    assert 'id="try-it"' not in failed_page


def npy_upload(array, *, allow_pickle: bool = False, name: str = "x.npy") -> SimpleUploadedFile:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return SimpleUploadedFile(name, buffer.getvalue(), content_type="application/octet-stream")


@pytest.fixture
def ready(alice, registry):
    backbone, _, heads = registry
    return assembly_row(alice, backbone, [heads["sentiment2"], heads["topic"]])


def test_try_it_refuses_a_pickled_npy_without_unpickling(client, alice, ready, monkeypatch):
    called = []
    monkeypatch.setattr(assembly_views, "prediction_run_and_wait", lambda **kw: called.append(kw))
    monkeypatch.setattr(np, "load", _guarded_np_load(np.load))
    client.force_login(alice)
    pickled = npy_upload(np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    page = client.post(f"/assemblies/{ready.pk}/try/", {"task_id": 0, "source": "npy", "file": pickled})
    assert page.status_code == 200
    error = section(page.content.decode(), 'id="try-error"')
    assert "pickled data" in error and "never loaded" in error
    assert called == [] and not Prediction.objects.exists()


def _guarded_np_load(real_load):
    def load(*args, **kwargs):
        assert kwargs.get("allow_pickle") is False, "np.load must be called with allow_pickle=False"
        return real_load(*args, **kwargs)

    return load


def test_try_it_reports_a_wrong_shape_from_the_real_validation(client, alice, ready):
    client.force_login(alice)
    upload = npy_upload(np.zeros((2, 3), dtype="float32"))
    page = client.post(f"/assemblies/{ready.pk}/try/", {"task_id": 1, "source": "npy", "file": upload})
    error = section(page.content.decode(), 'id="try-error"')
    assert "has shape [2, 3]; expected one example of shape [8]" in error
    assert not Prediction.objects.exists()  # rejected before anything was queued
    missing = client.post(f"/assemblies/{ready.pk}/try/", {"task_id": 1, "source": "npy"}).content.decode()
    assert "Choose a file to upload" in missing


class FakePrediction:
    Status = Prediction.Status

    def __init__(self, task_id, outputs, status=Prediction.Status.SUCCEEDED, error=""):
        self.task_id, self.outputs, self.status, self.error = task_id, outputs, status, error


def test_try_it_random_example_shows_outputs_with_labels_and_argmax(client, alice, ready, monkeypatch):
    calls = []

    def fake_run(**kwargs):
        calls.append(kwargs)
        return FakePrediction(kwargs["task_id"], [[0.1, 0.7, 0.2]])

    monkeypatch.setattr(assembly_views, "prediction_run_and_wait", fake_run)
    client.force_login(alice)
    page = client.post(f"/assemblies/{ready.pk}/try/", {"task_id": 0, "source": "random", "seed": 3}).content.decode()
    (call,) = calls
    assert call["assembly"] == ready and call["task_id"] == 0 and call["user"] == alice
    expected = np.random.default_rng(3).standard_normal([8]).astype("float32")
    np.testing.assert_array_equal(call["inputs"], expected)
    outputs = section(page, 'id="trial-outputs"')
    assert "neg" in outputs and "neu" in outputs and "pos" in outputs
    best = re.findall(r'<tr class="row-highlight best">\s*<td>(\w+)', outputs)
    assert best == ["neu"]

    monkeypatch.setattr(
        assembly_views,
        "prediction_run_and_wait",
        lambda **kw: FakePrediction(0, None, status=Prediction.Status.FAILED, error="InvalidArgumentError: boom"),
    )
    failed = client.post(f"/assemblies/{ready.pk}/try/", {"task_id": 0, "source": "random"}).content.decode()
    assert "The prediction failed in the worker: InvalidArgumentError: boom" in section(failed, 'id="try-error"')


def test_try_it_resizes_an_image_for_a_rank_3_input(client, alice, registry, monkeypatch):
    backbone, _, heads = registry
    image_assembly = assembly_row(alice, backbone, [heads["topic"]], input_shape=[None, 4, 6, 3])
    calls = []
    monkeypatch.setattr(
        assembly_views,
        "prediction_run_and_wait",
        lambda **kw: calls.append(kw) or FakePrediction(0, [[1.0, 2.0, 3.0, 0.0, 0.5]]),
    )
    client.force_login(alice)
    detail = client.get(f"/assemblies/{image_assembly.pk}/").content.decode()
    assert "Upload an image (resized to 4×6×3, 0–1)" in detail
    buffer = io.BytesIO()
    Image.new("RGB", (40, 20), color=(255, 0, 51)).save(buffer, format="PNG")
    upload = SimpleUploadedFile("cat.png", buffer.getvalue(), content_type="image/png")
    page = client.post(f"/assemblies/{image_assembly.pk}/try/", {"task_id": 0, "source": "image", "file": upload})
    (call,) = calls
    inputs = call["inputs"]
    assert inputs.shape == (4, 6, 3) and inputs.dtype == np.float32
    np.testing.assert_allclose(inputs[0, 0], [1.0, 0.0, 0.2], atol=1e-6)
    outputs = section(page.content.decode(), 'id="trial-outputs"')  # no labels: shown by index
    assert re.findall(r'<tr class="row-highlight best">\s*<td><span class="mono">\[(\d+)\]', outputs) == ["2"]
    not_an_image = SimpleUploadedFile("x.png", b"not an image")
    bad = client.post(f"/assemblies/{image_assembly.pk}/try/", {"task_id": 0, "source": "image", "file": not_an_image})
    assert "Could not read the file as an image" in bad.content.decode()


# --- Backbones with string, integer and several named inputs (hand-written manifests) --------


@pytest.fixture
def by_kind(alice, registry):
    """Ready assemblies by kind of input, each on its own set of heads (assemblies are deduplicated)."""
    backbone, _, heads = registry
    return {
        "two": with_inputs(
            assembly_row(alice, backbone, [heads["sentiment2"], heads["topic"]], task_signatures=True), TWO_INPUTS
        ),
        "text": with_inputs(assembly_row(alice, backbone, [heads["topic"]]), TEXT_INPUT),
        "old": as_old_single_input(assembly_row(alice, backbone, [heads["sentiment1"]])),
        "image": assembly_row(alice, backbone, [heads["sentiment2"]], input_shape=[None, 4, 6, 3]),
    }


def pre_text(page: str, element_id: str) -> str:
    """Return the unescaped text of the <pre id=element_id> block."""
    return html.unescape(page.split(f'id="{element_id}">', 1)[1].split("</pre>", 1)[0])


def offered_sources(page: str) -> list[str]:
    return re.findall(r'name="source" value="(\w+)"', section(page, 'id="try-it"'))


def test_try_it_offers_the_sources_that_fit_the_inputs(client, alice, by_kind):
    client.force_login(alice)
    pages = {kind: client.get(f"/assemblies/{assembly.pk}/").content.decode() for kind, assembly in by_kind.items()}
    assert offered_sources(pages["two"]) == ["random"]
    assert "Random example (seeded: token_ids integers 0–1, numeric normal noise)" in pages["two"]
    assert offered_sources(pages["text"]) == ["random", "text"]
    assert "Type a sentence" in pages["text"] and "Random example (seeded a few random words)" in pages["text"]
    assert offered_sources(pages["old"]) == ["random", "npy"]
    assert offered_sources(pages["image"]) == ["random", "npy", "image"]
    for kind, page in pages.items():
        assert ('id="id_file"' in page) == (kind in ("old", "image")), kind
        assert ('id="id_text"' in page) == (kind == "text"), kind

    # A source that is not offered is refused by the form, before anything is queued.
    npy = npy_upload(np.zeros(12, dtype="int32"))
    refused = client.post(f"/assemblies/{by_kind['two'].pk}/try/", {"task_id": 0, "source": "npy", "file": npy})
    assert "Select a valid choice" in refused.content.decode()
    assert not Prediction.objects.exists()


def test_try_it_random_examples_fit_every_kind_of_input(by_kind):
    def random_inputs(assembly, seed):
        form = TryItForm({"task_id": 0, "source": "random", "seed": seed}, manifest=assembly.manifest)
        assert form.is_valid(), form.errors
        return form.cleaned_data["inputs"]

    two = random_inputs(by_kind["two"], 5)
    assert sorted(two) == ["numeric", "token_ids"]
    assert two["token_ids"].shape == (12,) and two["token_ids"].dtype == np.int32
    assert set(np.unique(two["token_ids"])) <= {0, 1}
    assert two["numeric"].shape == (5,) and two["numeric"].dtype == np.float32
    again = random_inputs(by_kind["two"], 5)
    np.testing.assert_array_equal(again["token_ids"], two["token_ids"])
    np.testing.assert_array_equal(again["numeric"], two["numeric"])
    assert not np.array_equal(random_inputs(by_kind["two"], 6)["numeric"], two["numeric"])

    texts = [random_inputs(by_kind["text"], seed) for seed in range(5)]
    for text in texts:
        assert text.shape == (1,) and isinstance(text[0], str)
        words = text[0].split(" ")
        assert 2 <= len(words) <= 6 and set(words) <= set(RANDOM_WORDS)
    assert len({text[0] for text in texts}) > 1
    assert random_inputs(by_kind["text"], 3)[0] == texts[3][0]

    old = random_inputs(by_kind["old"], 3)
    np.testing.assert_array_equal(old, np.random.default_rng(3).standard_normal([8]).astype("float32"))

    typed = TryItForm({"task_id": 0, "source": "text", "text": "great movie"}, manifest=by_kind["text"].manifest)
    assert typed.is_valid() and typed.cleaned_data["inputs"].tolist() == ["great movie"]
    blank = TryItForm({"task_id": 0, "source": "text", "text": "  "}, manifest=by_kind["text"].manifest)
    assert not blank.is_valid() and "Type a sentence, or pick the random example." in blank.non_field_errors()


def test_try_it_runs_named_and_text_inputs_through_the_real_validation(client, alice, by_kind, monkeypatch):
    seen = fake_worker(monkeypatch)
    client.force_login(alice)
    two = client.post(f"/assemblies/{by_kind['two'].pk}/try/", {"task_id": 1, "source": "random", "seed": 2})
    assert 'id="trial-outputs"' in two.content.decode()
    text = client.post(f"/assemblies/{by_kind['text'].pk}/try/", {"task_id": 0, "source": "text", "text": "great"})
    assert 'id="trial-outputs"' in text.content.decode()
    named, typed = seen
    assert sorted(named) == ["numeric", "token_ids"]
    assert np.asarray(named["token_ids"]).shape == (1, 12) and np.asarray(named["numeric"]).shape == (1, 5)
    assert typed == [["great"]]


def test_detail_shows_every_input_and_snippets_use_their_names(client, alice, by_kind):
    client.force_login(alice)
    page = client.get(f"/assemblies/{by_kind['two'].pk}/").content.decode()
    listed = section(page, 'id="input-list"')
    assert "<code>token_ids</code> <code>(12,)</code> int32" in listed
    assert "<code>numeric</code> <code>(5,)</code> float32" in listed
    python = pre_text(page, "python-snippet")
    assert '"token_ids": np.random.randint(0, 2, size=(2, 12)).astype("int32"),' in python
    assert '"numeric": np.random.standard_normal((2, 5)).astype("float32"),' in python
    assert "**inputs, task_id=tf.constant([1, 1], tf.int32)" in python
    assert 'model.signatures["topic"](**inputs)' in python
    compile(python, "python-snippet", "exec")
    rest = json.loads(pre_text(page, "rest-body"))
    assert rest == {
        "signature_name": "serving_default",
        "inputs": {"token_ids": [[0] * 12], "numeric": [[0.0] * 5], "task_id": [1]},
    }

    text_page = client.get(f"/assemblies/{by_kind['text'].pk}/").content.decode()
    assert "<code>inputs</code> <code>(1,)</code> string" in section(text_page, 'id="input-list"')
    text_python = pre_text(text_page, "python-snippet")
    assert 'x = [["a great movie"], ["not good at all"]]' in text_python
    compile(text_python, "python-snippet", "exec")
    text_rest = json.loads(pre_text(text_page, "rest-body"))
    assert text_rest == {"signature_name": "serving_default", "inputs": {"inputs": [["a great movie"]], "task_id": [0]}}

    old_page = client.get(f"/assemblies/{by_kind['old'].pk}/").content.decode()
    assert "<code>inputs</code> <code>(8,)</code> float32" in section(old_page, 'id="input-list"')


def test_large_inputs_get_a_body_generator_with_every_name(alice, by_kind, capsys):
    large = [
        {"name": "image", "shape": [None, 32, 32, 3], "dtype": "float32"},
        {"name": "caption", "shape": [None], "dtype": "string"},
    ]
    snippets = usage_snippets(with_inputs(by_kind["two"], large))
    body = json.loads(snippets["rest_body"])
    assert body["inputs"]["image"] == "<one [32, 32, 3] float32 array per row>"
    assert body["inputs"]["caption"] == ["a great movie"]  # small enough to show
    assert body["inputs"]["task_id"] == [1]
    command = snippets["rest_generator"]
    code = command.split("python -c '", 1)[1].rsplit("' > body.json", 1)[0]
    exec(code, {})  # noqa: S102 - the generator we show only builds JSON with NumPy
    generated = json.loads(capsys.readouterr().out)
    assert np.asarray(generated["inputs"]["image"]).shape == (1, 32, 32, 3)
    assert generated["inputs"]["caption"] == ["a great movie"] and generated["inputs"]["task_id"] == [1]
    assert "np.random.standard_normal((2, 32, 32, 3))" in snippets["python"]
    assert '"caption": ["a great movie", "not good at all"]' in snippets["python"]
    compile(snippets["python"], "python-snippet", "exec")


def test_try_it_refuses_a_npy_whose_header_declares_terabytes_without_allocating(client, alice, ready):
    """np.load would allocate what the header declares (MemoryError, a 500): the header is checked first."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
    buffer.write(b"\0" * 16)
    forged = SimpleUploadedFile("x.npy", buffer.getvalue(), content_type="application/octet-stream")
    client.force_login(alice)
    page = client.post(f"/assemblies/{ready.pk}/try/", {"task_id": 0, "source": "npy", "file": forged})
    assert page.status_code == 200
    error = section(page.content.decode(), 'id="try-error"')
    assert "header declares 8,000,000,000,000" in error and "Send fewer rows" in error
    assert not Prediction.objects.exists()
