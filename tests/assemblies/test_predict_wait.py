"""Predictions never hold a web thread for long: POST .../predict/ waits at most `wait` seconds,
then answers 202 with an id to poll at GET .../predictions/{pid}/; the dashboard's "try it" polls
the same way. Web-side tests with no worker (or a stand-in), then a real worker, then a live
gunicorn without a worker taking concurrent predicts."""

import time
import types
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import numpy as np
import pytest
import requests

from assemblies import services
from assemblies import views as assembly_views
from assemblies.models import Prediction
from core.tracked_work import row_claim, row_finish
from heads.models import HeadVersion
from tests.assemblies.manifests import fake_worker
from tests.view_helpers import assembly_row, backbone_row, head_row

APPROVED = HeadVersion.Status.APPROVED
ROW = [0.5] * 8
ANSWER_FIELDS = {"outputs", "task", "task_id", "output_width", "labels"}  # the 200 body before polling existed


@pytest.fixture
def author(api_client_for):
    return api_client_for("alice")


@pytest.fixture
def ready(author):
    """Two ready assemblies of team vision (no worker has built them): sentiment+topic, and topic alone."""
    backbone = backbone_row(author.user)
    sentiment = head_row(author.user, backbone, task="sentiment", status=APPROVED, labels=["neg", "neu", "pos"])
    topic = head_row(author.user, backbone, task="topic", status=APPROVED, output_width=5)
    return assembly_row(author.user, backbone, [sentiment, topic]), assembly_row(author.user, backbone, [topic])


@pytest.fixture
def no_worker(monkeypatch) -> list:
    """Nothing answers: predictions stay queued. Return the ids that would have been queued."""
    queued = []
    queue_other = services.queue_on_commit
    monkeypatch.setattr(
        services,
        "queue_on_commit",
        lambda task_name, pk: queued.append(pk) if task_name == "assemblies.predict" else queue_other(task_name, pk),
    )
    return queued


@pytest.fixture
def server_waits(monkeypatch) -> list:
    """The sleeps the web side asks for while it waits for a prediction (assemblies.services).

    How long a request held its thread is then read from what the server did, not from a wall
    clock that a busy machine stretches.
    """
    waits = []

    def sleep(seconds):
        waits.append(seconds)
        time.sleep(seconds)

    monkeypatch.setattr(services, "time", types.SimpleNamespace(monotonic=time.monotonic, sleep=sleep))
    return waits


def predict(client, assembly, *, query: str = "", **body):
    return client.post(f"/api/assemblies/{assembly.pk}/predict/{query}", {"task": "sentiment", **body}, format="json")


# --- The API, web side ------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_answer_within_wait_keeps_the_200_body_and_adds_the_prediction(author, ready, monkeypatch):
    fake_worker(monkeypatch)
    answered = predict(author, ready[0], inputs=[ROW, ROW], wait=3)
    assert answered.status_code == 200, answered.json()
    body = answered.json()
    (prediction,) = Prediction.objects.all()
    assert body == {
        "outputs": [[0.25] * 3] * 2,
        "task": "sentiment",
        "task_id": 0,
        "output_width": 3,
        "labels": ["neg", "neu", "pos"],
        "prediction": prediction.pk,
        "status": "succeeded",
        "runtime": "tensorflow",
    }
    default_wait = predict(author, ready[0], inputs=ROW)  # no `wait`: up to 5 s, answered at once here
    assert default_wait.status_code == 200
    assert set(default_wait.json()) == ANSWER_FIELDS | {"prediction", "status", "runtime"}


@pytest.mark.django_db
def test_wait_0_answers_202_at_once_and_the_poll_path_follows_the_prediction(author, ready, no_worker, server_waits):
    response = predict(author, ready[0], inputs=[ROW, ROW], wait=0)
    assert server_waits == []  # at once: the request never waited
    assert response.status_code == 202, response.json()
    (prediction,) = Prediction.objects.all()
    poll = f"/api/assemblies/{ready[0].pk}/predictions/{prediction.pk}/"
    assert response.json() == {"prediction": prediction.pk, "status": "queued", "poll": poll}
    assert no_worker == [prediction.pk]

    queued = author.get(poll).json()
    assert (queued["status"], queued["outputs"], queued["error"], queued["finished_at"]) == ("queued", None, None, None)
    assert queued["prediction"] == prediction.pk and queued["poll"] == poll

    claimed = row_claim(Prediction, prediction.pk)
    assert author.get(poll).json()["status"] == "running"
    row_finish(claimed, status=Prediction.Status.SUCCEEDED, outputs=[[0.1, 0.2, 0.7]] * 2)
    done = author.get(poll).json()
    assert done["status"] == "succeeded" and done["error"] is None and done["finished_at"]
    # The same output fields as a 200 answer of POST .../predict/.
    assert {key: done[key] for key in ANSWER_FIELDS} == {
        "outputs": [[0.1, 0.2, 0.7]] * 2, "task": "sentiment", "task_id": 0, "output_width": 3,
        "labels": ["neg", "neu", "pos"],
    }  # fmt: skip


@pytest.mark.django_db
def test_a_short_wait_without_a_worker_answers_202_after_that_wait(author, ready, no_worker, server_waits):
    started = time.monotonic()
    response = predict(author, ready[0], query="?wait=0.4", inputs=ROW)
    elapsed = time.monotonic() - started
    assert response.status_code == 202 and response.json()["status"] == "queued"
    assert elapsed >= 0.4, elapsed  # it waited the whole 0.4 s ...
    assert len(server_waits) >= 2 and sum(server_waits) <= 0.4 + 1e-9, server_waits  # ... and not longer


@pytest.mark.django_db
def test_a_failed_prediction_is_a_400_to_the_waiting_request_and_an_error_when_polled(author, ready, monkeypatch):
    def failing_worker(task_name, pk):
        row_finish(row_claim(Prediction, pk), status=Prediction.Status.FAILED, error="InvalidArgumentError: boom")

    monkeypatch.setattr(services, "queue_on_commit", failing_worker)
    response = predict(author, ready[0], inputs=ROW)
    assert response.status_code == 400
    error = response.json()["error"]
    (prediction,) = Prediction.objects.all()
    assert error["code"] == "prediction_failed" and "InvalidArgumentError: boom" in error["message"]
    assert error["detail"]["prediction"] == prediction.pk
    polled = author.get(error["detail"]["poll"]).json()
    assert (polled["status"], polled["outputs"], polled["error"]) == ("failed", None, "InvalidArgumentError: boom")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "query"),
    [
        ({"wait": -1}, ""),
        ({"wait": 31}, ""),
        ({"wait": 30.5}, ""),
        ({"wait": "soon"}, ""),
        ({"wait": True}, ""),
        ({"wait": [1]}, ""),
        ({}, "?wait=abc"),
        ({}, "?wait=-0.1"),
        ({}, "?wait=nan"),
        ({}, "?wait=inf"),
        ({}, "?wait=1e9"),
    ],
    ids=["negative", "over-30", "just-over-30", "text", "boolean", "list", "q-text", "q-negative", "q-nan", "q-inf",
         "q-huge"],
)  # fmt: skip
def test_bad_wait_values_are_refused_with_what_is_expected(author, ready, no_worker, body, query):
    response = predict(author, ready[0], query=query, inputs=ROW, **body)
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert error["message"].startswith("wait: must be a number of seconds from 0 to 30; received ")
    assert "send 0 to get a prediction id to poll at once" in error["message"]
    assert list(error["detail"]) == ["wait"]
    assert not Prediction.objects.exists() and no_worker == []


@pytest.mark.django_db
def test_wait_is_given_once_and_the_edges_are_accepted(author, ready, no_worker):
    both = predict(author, ready[0], query="?wait=1", inputs=ROW, wait=1)
    assert both.status_code == 400
    assert both.json()["error"]["message"] == "wait: Give 'wait' once, in the body or in the query string, not in both."
    assert not Prediction.objects.exists()
    assert predict(author, ready[0], inputs=ROW, wait=0.0).status_code == 202
    assert predict(author, ready[0], query="?wait=0", inputs=ROW).status_code == 202


@pytest.mark.django_db
def test_wait_is_capped_by_the_setting(author, ready, no_worker, settings, server_waits):
    settings.MODELHUB_PREDICT_MAX_WAIT = 0
    assert predict(author, ready[0], inputs=ROW, wait=30).status_code == 202
    assert server_waits == []
    settings.MODELHUB_PREDICT_MAX_WAIT = 0.2
    assert predict(author, ready[0], inputs=ROW, wait=30).status_code == 202
    assert 0 < sum(server_waits) <= 0.2 + 1e-9, server_waits


@pytest.mark.django_db
def test_a_prediction_is_polled_only_on_its_own_assembly_by_its_team(author, ready, no_worker, api_client_for):
    mine, other = ready
    prediction = predict(author, mine, inputs=ROW, wait=0).json()["prediction"]
    assert author.get(f"/api/assemblies/{mine.pk}/predictions/{prediction}/").status_code == 200
    wrong_assembly = author.get(f"/api/assemblies/{other.pk}/predictions/{prediction}/")
    assert wrong_assembly.status_code == 404
    assert wrong_assembly.json()["error"]["message"].startswith(f"Prediction {prediction} was not found on assembly")
    assert author.get(f"/api/assemblies/{mine.pk}/predictions/{prediction + 1000}/").status_code == 404
    outsider = api_client_for("mallory", team="audio")
    foreign = outsider.get(f"/api/assemblies/{mine.pk}/predictions/{prediction}/")
    assert foreign.status_code == 404


# --- The dashboard's "try it" -----------------------------------------------------------------


@pytest.mark.django_db
def test_try_it_polls_a_slow_prediction_instead_of_holding_the_request(
    client, author, ready, no_worker, monkeypatch, make_member, server_waits
):
    monkeypatch.setattr(assembly_views, "TRY_IT_WAIT_SECONDS", 0)
    assembly = ready[0]
    client.force_login(author.user)
    posted = client.post(f"/assemblies/{assembly.pk}/try/", {"task_id": 1, "source": "random", "seed": 1})
    assert server_waits == []  # the request did not hold its thread: the page polls
    (prediction,) = Prediction.objects.all()
    trial_url = f"/assemblies/{assembly.pk}/try/{prediction.pk}/"
    assert posted.status_code == 302 and posted["Location"] == f"{trial_url}#try-it"

    pending = client.get(trial_url).content.decode()
    poller = pending.split('id="trial-pending"', 1)[1].split(">", 1)[0]
    assert f'data-poll-url="/api/assemblies/{assembly.pk}/predictions/{prediction.pk}/"' in poller
    assert 'data-poll-status="queued"' in poller and 'data-poll-pending="queued running"' in poller
    assert "js/status_poll.js" in pending and "<script>" not in pending  # no inline script (CSP)
    assert 'id="trial-outputs"' not in pending

    claimed = row_claim(Prediction, prediction.pk)
    row_finish(claimed, status=Prediction.Status.SUCCEEDED, outputs=[[0.0, 0.1, 0.9, 0.0, 0.0]])
    done = client.get(trial_url).content.decode()
    assert 'id="trial-pending"' not in done and 'id="trial-outputs"' in done and "Outputs of topic" in done

    Prediction.objects.filter(pk=prediction.pk).update(status=Prediction.Status.FAILED, error="OOM", outputs=None)
    failed = client.get(trial_url).content.decode()
    assert "The prediction failed in the worker: OOM" in failed and 'id="trial-outputs"' not in failed

    assert client.get(f"/assemblies/{ready[1].pk}/try/{prediction.pk}/").status_code == 404
    outsider, _ = make_member("mallory", team="audio")
    client.force_login(outsider)
    assert client.get(trial_url).status_code == 404


# --- A real worker, and a live gunicorn without one ----------------------------------------------

PREDICT_TIMEOUT = 120  # a fresh worker imports TensorFlow and loads the SavedModel


@pytest.mark.django_db(transaction=True)
def test_real_worker_answers_in_time_and_a_live_app_without_workers_answers_202s(
    api_client_for, make_member, model_files, celery_worker, tmp_path
):
    import keras

    from tests.api.live_app import flush_redis, isolated_env, live_server, live_worker
    from tests.registry_helpers import import_and_approve, wait_status

    env = isolated_env()  # skips unless PostgreSQL and Redis (make test)
    author = api_client_for("alice")
    reviewer = api_client_for("rita", role="reviewer")
    imported = import_and_approve(author, reviewer, model_files)
    created = author.post("/api/assemblies/", {"team": "vision", "backbone": imported["backbone"]}, format="json")
    assembly = wait_status(
        author, f"/api/assemblies/{created.json()['id']}/", pending=("queued", "building", "verifying"), timeout=240
    )
    assert assembly["status"] == "ready", assembly
    url = f"/api/assemblies/{assembly['id']}/predict/"
    x = np.random.default_rng(5).standard_normal((2, 8)).astype("float32")
    expected = np.asarray(keras.saving.load_model(model_files["full_topic"], safe_mode=True)(x))

    # The session's worker answers within `wait`: 200, the body as before plus the prediction.
    answered = author.post(url, {"task": "topic", "inputs": x.tolist(), "wait": 30}, format="json")
    assert answered.status_code == 200, answered.json()
    assert set(answered.json()) == ANSWER_FIELDS | {"prediction", "status", "runtime"}
    np.testing.assert_allclose(np.asarray(answered.json()["outputs"]), expected, atol=1e-5)
    # wait=0: 202 at once, then the poll path gives the same outputs once the worker has run it.
    queued = author.post(url, {"task": "topic", "inputs": x.tolist(), "wait": 0}, format="json")
    assert queued.status_code == 202 and queued.json()["status"] in ("queued", "running")
    polled = wait_status(author, queued.json()["poll"], pending=("queued", "running"), timeout=PREDICT_TIMEOUT)
    assert polled["status"] == "succeeded", polled
    np.testing.assert_allclose(np.asarray(polled["outputs"]), expected, atol=1e-5)

    # gunicorn (2 processes x 4 threads) on a broker no worker listens to: three concurrent predicts
    # with wait=2 each answer 202 after their wait instead of holding a thread until a worker answers,
    # and they wait side by side: every one was received before the first one's wait was over.
    _, token = make_member("walt", team="vision")
    flush_redis(env["CELERY_BROKER_URL"])
    with live_server(env, tmp_path / "gunicorn.log") as base:
        session = requests.Session()
        session.headers["Authorization"] = f"Token {token}"

        def timed_predict(_):
            started = time.monotonic()
            response = session.post(base + url, json={"task": "topic", "inputs": x.tolist(), "wait": 2}, timeout=60)
            return response, time.monotonic() - started

        session.get(base + "/api/health/", timeout=30)  # warm the connection and both processes' imports
        with ThreadPoolExecutor(max_workers=3) as pool:
            results = list(pool.map(timed_predict, range(3)))
        for response, elapsed in results:
            assert response.status_code == 202, response.text
            assert response.json()["status"] == "queued"
            assert elapsed >= 2.0, [round(e, 2) for _, e in results]
        polls = [response.json()["poll"] for response, _ in results]
        bodies = [session.get(base + poll, timeout=30).json() for poll in polls]
        assert [body["status"] for body in bodies] == ["queued"] * 3, bodies
        received = sorted(datetime.fromisoformat(body["created_at"]) for body in bodies)
        assert received[-1] - received[0] < timedelta(seconds=2), received  # served side by side

        # A worker starts on that broker: it runs the queued predictions, and the polls show the outputs.
        with live_worker(env, tmp_path / "worker.log"):
            for poll in polls:
                body = wait_status(session, base + poll, pending=("queued", "running"), timeout=PREDICT_TIMEOUT)
                assert body["status"] == "succeeded", body
                np.testing.assert_allclose(np.asarray(body["outputs"]), expected, atol=1e-5)
