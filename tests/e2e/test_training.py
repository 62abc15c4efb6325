"""An engineer trains a reward model from the browser and watches the job finish on its page.

Real pieces end to end: the training form of a real uvicorn server, a real `python -m app.cli worker` process
that claims the job and runs the trainer child, tiny models built by `trainer.tiny`, and the job page's status
partial polling itself through htmx until the job succeeds, with no page reload.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import login, screenshot
from tests.helpers import import_lines, make_project, native_lines

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
JOB_TIMEOUT_MS = 180_000
"""Generous bound for a few training steps on a shared 2-core machine (a wait limit, not an assertion)."""
SMALL_PARAMS = {"max_steps": "3", "per_device_train_batch_size": "4", "num_train_epochs": "1"}


@pytest.fixture
def start_worker(live_server, tmp_path):
    """Starts a real worker process on the live server's database and data directory; stopped after the test.

    Started only once the data is seeded: `init_tiny` keeps its SQLite read transaction open while it builds the
    models, and a worker writing meanwhile would make its final insert fail with "database is locked".
    """
    env = os.environ | {"RANKFORGE_DATABASE_URL": os.environ["RANKFORGE_DATABASE_URL"],
                        "RANKFORGE_DATA_DIR": os.environ["RANKFORGE_DATA_DIR"], "OMP_NUM_THREADS": "1"}  # fmt: skip
    log_path = tmp_path / "worker.log"
    started: list[subprocess.Popen] = []

    def start() -> tuple[subprocess.Popen, Path]:
        with open(log_path, "w") as log:  # the child keeps its own copy of the descriptor
            started.append(subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--poll", "0.5"],
                                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
        return started[-1], log_path

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def seed_project(api, db_url, admin) -> dict:
    """A project with 16 ranked pairs (judgments come with the import) and a tiny policy + reward registered."""
    from app.db import session_scope
    from app.models import Project
    from app.registry.service import init_tiny

    project = make_project(api, admin, name="Browser training", slug="browser-train")
    response = import_lines(api, admin, project["id"], native_lines(16, k=2, prefix="t", ranking=True))
    assert response.status_code == 200, response.text
    with session_scope(db_url) as session:
        versions = init_tiny(session, session.get(Project, project["id"]))
        names = {version.kind: version.name for version in versions}
    return project | {"models": names}


def test_engineer_starts_a_reward_job_and_watches_it_succeed(
    page, users, db_url, api, start_worker, browser_problems
):
    admin = users.create("root", "admin")
    engineer = users.create("eve", "engineer")
    project = seed_project(api, db_url, admin)
    worker_process, worker_log = start_worker()

    login(page, engineer)
    page.goto(f"/projects/{project['id']}/train")
    form = page.locator("#train-form")
    assert form.locator("input[name=kind]").input_value() == "reward"
    assert "Snapshot now" in form.locator("select[name=dataset_id]").inner_text()
    assert project["models"]["policy"] in form.locator("select[name=base_model]").inner_text()
    for name, value in SMALL_PARAMS.items():
        form.locator(f"input[name=param_{name}]").fill(value)
    screenshot(page, "training-form")
    with page.expect_navigation():
        form.locator("button[type=submit]").click()
    assert "/jobs/" in page.url, page.inner_text("main")
    job_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
    assert page.locator(".page-header h1").inner_text() == f"Job #{job_id}: reward"

    # From here on the page must not reload: the marker would vanish and a load event would fire.
    page.evaluate("window.rankforgeMarker = 'still the same page'")
    loads: list[str] = []
    page.on("load", lambda _: loads.append(page.url))
    polls: list[int] = []  # HTTP status of each self-poll of the status partial

    def record_poll(response) -> None:
        if response.url.endswith(f"/jobs/{job_id}/status"):
            polls.append(response.status)

    page.on("response", record_poll)

    # Imported here, not at the top: without Playwright the `browser` fixture skips with a clear reason.
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    status = page.locator("#job-status")
    try:
        status.locator(".badge-succeeded, .badge-failed, .badge-cancelled").wait_for(timeout=JOB_TIMEOUT_MS)
    except PlaywrightTimeout:
        pytest.fail(f"the job did not finish (worker alive: {worker_process.poll() is None}); "
                    f"page: {status.inner_text()[-1500:]}\nworker log: {worker_log.read_text()[-3000:]}")  # fmt: skip
    screenshot(page, "training-job-finished")
    assert status.locator(".badge-succeeded").count() == 1, status.inner_text()
    assert polls and all(code == 200 for code in polls), polls
    assert loads == []
    assert page.evaluate("window.rankforgeMarker") == "still the same page"
    # A finished job stops polling itself and offers no cancel button.
    assert status.get_attribute("hx-trigger") is None
    assert status.locator("button", has_text="Cancel").count() == 0

    done = api.get(f"/api/v1/jobs/{job_id}", headers=engineer["headers"]).json()
    assert done["status"] == "succeeded" and done["params"]["max_steps"] == 3, done
    version_id = done["result"]["model_version_id"]
    version = api.get(f"/api/v1/models/{version_id}", headers=engineer["headers"]).json()
    assert version["kind"] == "reward" and version["job_id"] == job_id
    link = status.locator(f"a[href='/models#model-{version_id}']")
    assert link.inner_text() == version["name"]
    assert "(reward)" in status.inner_text()

    with page.expect_navigation():
        link.click()
    assert page.locator(f"#model-{version_id}").count() == 1
    assert browser_problems == []
