"""Upload a dataset and a backbone, launch a train_head job from the form and watch it train, in
headless Chromium with a real worker: the progress moves without a page reload, and the
finished job shows its loss curves and a link to the new head."""

import os
import re
import signal

import pytest
from playwright.sync_api import expect

from tests import model_factory as mf

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WORKER_TIMEOUT_MS = 120_000  # the first task in a fresh worker imports TensorFlow

# Record every value the epoch counter shows, and plant a marker that a reload would wipe.
WATCH_EPOCHS = """() => {
  window.__mh_marker = "still here";
  window.__mh_epochs = [document.getElementById("job-epoch").textContent];
  new MutationObserver(() => window.__mh_epochs.push(document.getElementById("job-epoch").textContent))
    .observe(document.getElementById("job-epoch"), {childList: true, characterData: true, subtree: true});
}"""


def screenshot(page, name: str) -> None:
    """Save a screenshot when MODELHUB_SCREENSHOT_DIR is set (for looking at the pages)."""
    folder = os.environ.get("MODELHUB_SCREENSHOT_DIR")
    if folder:
        os.makedirs(folder, exist_ok=True)
        page.screenshot(path=os.path.join(folder, f"{name}.png"), full_page=True)


def shown_while_paused(page, worker, job_id: int, *, after: int) -> int:
    """Wait until the job's row reports an epoch past `after` (and before the last), pause the worker's
    pool process, wait for the page to show that epoch, resume; return the epoch."""
    from tests.conftest import pool_processes, wait_until
    from training.models import Job

    def epoch() -> int:
        job = Job.objects.get(pk=job_id)
        assert job.status == "running", (job.status, job.error)
        return (job.progress or {}).get("epoch", 0)

    wait_until(lambda: epoch() > after, timeout=WORKER_TIMEOUT_MS / 1000, interval=0.05, message=f"epoch > {after}")
    pids = pool_processes(worker)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        reached = epoch()
        assert reached < 8, f"the job finished its epochs before the page was checked ({reached}/8)"
        expect(page.locator("#job-epoch")).to_have_text(f"{reached}/8")
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    return reached


def test_launch_a_train_head_job_and_watch_it_live(logged_in_page, live_server, model_files, celery_worker, tmp_path):
    page = logged_in_page("dana", team="vision", role="admin")

    # A backbone through the registry form, validated by the worker.
    page.goto(f"{live_server.url}/backbones/upload/")
    page.fill("#id_name", "tiny")
    page.fill("#id_feature_layer", "features")
    page.set_input_files("#id_file", str(model_files["backbone"]))
    page.click("form.form button[type=submit]")
    expect(page.locator("#status-badge")).to_have_text("ready", timeout=WORKER_TIMEOUT_MS)

    # A dataset through the dataset form; its page follows validation until it is ready.
    data = mf.make_classification_npz(tmp_path / "quadrants.npz", num_rows=4000)
    page.click("nav.nav >> text=Jobs")
    page.click("nav.tabs >> text=Datasets")
    page.locator("a.btn", has_text="Upload dataset").first.click()
    page.fill("#id_name", "quadrants")
    page.set_input_files("#id_file", str(data))
    page.click("form.form button[type=submit]")
    expect(page.locator("#status-badge")).to_have_text("ready", timeout=WORKER_TIMEOUT_MS)
    expect(page.locator("#dataset-stats")).to_contain_text("3000")
    expect(page.locator("#class-histogram .hbar-fill")).to_have_count(3)
    expect(page.locator("#class-histogram")).to_contain_text("class_2")
    screenshot(page, "dataset")

    # Launch a train_head job from the form: the compatible pair is offered.
    page.click("text=Train a head on it")
    expect(page.locator("#id_backbone option:checked")).to_contain_text("tiny v1")
    expect(page.locator("#id_dataset option:checked")).to_contain_text("quadrants")
    page.fill("#id_task", "quadrant")
    page.fill("#id_epochs", "8")
    page.fill("#id_batch_size", "4")
    page.fill("#id_learning_rate", "0.02")
    page.click("#btn-launch")
    page.wait_for_url(f"{live_server.url}/jobs/*/")
    job_url = page.url
    page.evaluate(WATCH_EPOCHS)

    # Live progress without a reload: the epoch counter climbs while the marker survives. Twice the
    # worker's pool process is paused between epochs until the page shows the epoch it stopped at,
    # so the page is seen to follow two distinct epochs before the last whatever the machine's load.
    badge = page.locator("#status-badge")
    expect(badge).to_have_text("running", timeout=WORKER_TIMEOUT_MS)
    job_id = int(job_url.rstrip("/").rsplit("/", 1)[1])
    seen = 0
    for _ in range(2):
        seen = shown_while_paused(page, celery_worker, job_id, after=seen)
    expect(page.locator("#chart-loss polyline[data-series=loss]")).to_have_count(1, timeout=WORKER_TIMEOUT_MS)
    screenshot(page, "job-running")
    expect(badge).to_have_text("succeeded", timeout=WORKER_TIMEOUT_MS)
    expect(page.locator("#job-epoch")).to_have_text("8/8")
    assert page.url == job_url
    assert page.evaluate("window.__mh_marker") == "still here"
    assert page.evaluate("window.__mh_pageLoads") == 1
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    epochs = [int(text.split("/")[0]) for text in page.evaluate("window.__mh_epochs")]
    assert epochs == sorted(epochs) and epochs[-1] == 8 and len(set(epochs)) >= 3, epochs

    # The finished job: loss and accuracy curves for train and validation, the log, the head link.
    for chart, series in (("loss", "loss"), ("loss", "val_loss"), ("accuracy", "val_accuracy")):
        line = page.locator(f"#chart-{chart} polyline[data-series={series}]")
        expect(line).to_have_count(1)
        assert len(line.get_attribute("points").split()) == 8
    expect(page.locator("#legend-loss")).to_contain_text("val loss")
    expect(page.locator("#metrics-table tbody tr")).to_have_count(8)
    expect(page.locator("#job-log")).to_contain_text("epoch 8/8")
    expect(page.locator("#job-progress-bar")).to_have_attribute("style", "width: 100%;")
    expect(page.locator("#cancel-form")).to_be_hidden()
    head_link = page.locator("#job-results a[data-result=head]")
    expect(head_link).to_have_text("quadrant v1")
    screenshot(page, "job-succeeded")
    assert page.evaluate("window.__mh_marker") == "still here"

    head_link.click()
    expect(page.locator("h1")).to_contain_text("quadrant")
    expect(page.locator("#status-badge")).to_have_text("draft")

    # The jobs list shows it finished.
    page.click("nav.nav >> text=Jobs")
    row = page.locator("#job-table tbody tr").first
    expect(row).to_contain_text("succeeded")
    expect(row.locator(".progress span")).to_have_attribute("style", re.compile(r"width: 100%;?"))
