"""Many processes on one PostgreSQL (issue 25, point 3): two web processes and two workers, each its own process,
drain 2,000 comparisons rated by 40 simulated raters over HTTP (half on each web process) while the workers run a
queue of export jobs.

Checked: no comparison collects more judgments than it requires (and every one gets them all), the hand-kept
counters equal the rows, every job runs exactly once (the workers' handlers write a trace line per run: a double
claim would show twice) and succeeds at its first attempt, and neither web process logs a traceback.
PostgreSQL only: on SQLite one worker is the supported setup (README: Several machines).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from app.db import session_factory
from app.models import Comparison, Job, Judgment
from tests.conftest import ROOT, free_port
from tests.tasks.test_concurrency import a_ranking, assert_counters_match_rows, create_project, create_raters

COMPARISONS = 2000
RATERS = 40
EXPORT_JOBS = 24
HTTP_TIMEOUT = 60.0

TRACED_WORKER = textwrap.dedent("""
    import sys
    from app import worker

    worker_id, trace = sys.argv[1], sys.argv[2]

    def traced(handler):
        def run(ctx):
            with open(trace, "a", encoding="utf-8") as out:  # one short O_APPEND write per run: never interleaved
                out.write(f"{ctx.job_id} {ctx.worker_id}\\n")
            return handler(ctx)
        return run

    worker.HANDLERS.update({kind: traced(handler) for kind, handler in worker.HANDLERS.items()})
    worker.run_worker(worker_id=worker_id, poll_seconds=0.2)
""")


def _start_web(db_url: str, data_dir: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = os.environ | {"RANKFORGE_DATABASE_URL": db_url, "RANKFORGE_DATA_DIR": str(data_dir)}
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.asgi:app", "--host", "127.0.0.1",
                                    "--port", str(port), "--log-level", "warning"],
                                   cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    return process, f"http://127.0.0.1:{port}"


def _wait_healthy(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + 120  # a start limit (imports on a loaded 2-core machine), not an assertion
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    pytest.fail(f"web process {url} did not start: {log.read_text()[-2000:]}")


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


def _rate_until_done(base_url: str, project_id: int, rater: dict, errors: list, submitted: Counter) -> None:
    with httpx.Client(base_url=base_url, headers=rater["headers"], timeout=HTTP_TIMEOUT) as client:
        for _ in range(COMPARISONS + 1):
            task = client.get(f"/api/v1/projects/{project_id}/tasks/next")
            if task.status_code == 204:
                if task.headers.get("x-queue-state") == "busy":  # slots held by others' leases: ask again
                    time.sleep(float(task.headers.get("retry-after", "1")))
                    continue
                return
            if task.status_code != 200:
                errors.append(f"next-task {task.status_code}: {task.text[:300]}")
                return
            body = task.json()
            response = client.post(f"/api/v1/assignments/{body['assignment_id']}/judgment",
                                   json={"ranking": a_ranking(body)})  # fmt: skip
            if response.status_code != 201:
                errors.append(f"judgment {response.status_code}: {response.text[:300]}")
                return
            submitted[(base_url, rater["id"])] += 1
        errors.append(f"rater {rater['id']} was never told the queue is empty")


@pytest.mark.only_db("postgresql")
def test_two_web_processes_and_two_workers_drain_one_queue(db_url, users, tmp_path):
    admin = users.create("admin", "admin")
    raters = create_raters(db_url, RATERS)
    trace = tmp_path / "trace.log"
    trace.touch()
    logs = [tmp_path / "web-a.log", tmp_path / "web-b.log"]
    # each process its own local directory, as on separate machines (the store is the default local one here:
    # exports are written by whichever worker runs them; the store tests cover reading across machines)
    webs = [_start_web(db_url, tmp_path / f"web-{i}", log) for i, log in enumerate(logs)]
    workers = []
    try:
        for (process, url), log in zip(webs, logs, strict=True):
            _wait_healthy(process, url, log)
        urls = [url for _, url in webs]
        project_id = create_project(urls[0], admin, comparisons=COMPARISONS, overlap=1)
        # a small second project with a few judgments, whose export jobs the two workers share meanwhile
        small = create_project(urls[1], admin, comparisons=6, overlap=1)
        errors: list[str] = []
        submitted: Counter = Counter()
        _rate_until_done(urls[1], small, raters[0], errors, submitted)
        assert errors == []
        with httpx.Client(base_url=urls[0], headers=admin["headers"], timeout=HTTP_TIMEOUT) as client:
            for _ in range(EXPORT_JOBS):
                created = client.post(f"/api/v1/projects/{small}/datasets", json={"format": "pairs"})
                assert created.status_code in (200, 201, 202), created.text
        for name in ("worker-a", "worker-b"):
            env = os.environ | {"RANKFORGE_DATABASE_URL": db_url, "RANKFORGE_DATA_DIR": str(tmp_path / name)}
            with open(tmp_path / f"{name}.log", "w") as out:
                workers.append(subprocess.Popen([sys.executable, "-c", TRACED_WORKER, name, str(trace)], cwd=ROOT,
                                                env=env, stdout=out, stderr=subprocess.STDOUT))  # fmt: skip
        submitted.clear()
        with ThreadPoolExecutor(RATERS) as pool:
            futures = [pool.submit(_rate_until_done, urls[i % 2], project_id, rater, errors, submitted)
                       for i, rater in enumerate(raters)]  # fmt: skip
            for future in futures:
                future.result()
        assert errors == [], errors[:5]
        Session = session_factory(db_url)
        deadline = time.monotonic() + 600  # a limit for a stuck queue, not a timing assertion
        while time.monotonic() < deadline:
            with Session() as session:
                open_jobs = session.scalar(select(func.count()).select_from(Job)
                                           .where(Job.status.in_(["queued", "running"])))  # fmt: skip
            if open_jobs == 0:
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"{open_jobs} jobs still open; worker logs: "
                        + (tmp_path / "worker-a.log").read_text()[-1500:])  # fmt: skip
    finally:
        _stop(workers + [process for process, _ in webs])

    # no over-collection: every comparison holds exactly the one judgment it requires
    assert sum(submitted.values()) == COMPARISONS
    with Session() as session:
        per_comparison = session.execute(
            select(Judgment.comparison_id, func.count()).where(Judgment.project_id == project_id)
            .group_by(Judgment.comparison_id)
        ).all()  # fmt: skip
        assert len(per_comparison) == COMPARISONS and {n for _, n in per_comparison} == {1}
        assert session.scalar(select(func.count()).select_from(Comparison)
                              .where(Comparison.project_id == project_id,
                                     Comparison.n_judgments != Comparison.required)) == 0  # fmt: skip
        assert_counters_match_rows(session)
        jobs = {job.id: job for job in session.scalars(select(Job))}
    # every job ran exactly once, at its first attempt, and succeeded
    runs = Counter(int(line.split()[0]) for line in trace.read_text().splitlines())
    assert set(runs) == set(jobs) and set(runs.values()) == {1}, runs
    assert {(job.status, job.attempts) for job in jobs.values()} == {("succeeded", 1)}, \
        [(job.id, job.status, job.error) for job in jobs.values() if job.status != "succeeded"]
    per_worker = Counter(line.split()[1] for line in trace.read_text().splitlines())
    per_web = Counter(url for url, _ in submitted.elements())
    print(f"jobs per worker: {dict(per_worker)}; judgments per web process: {dict(per_web)}")
    for log in logs:
        text = log.read_text()
        assert "Traceback" not in text, text[-3000:]


@pytest.mark.only_db("postgresql")
def test_an_idle_task_never_runs_beside_another_workers_tick(client, users, db, tmp_path):
    """The schedule's tick of worker B finds worker A's tick still in its transaction (A's lease ran out, so B takes
    the lease): B does nothing until A's transaction ends, then acts once."""
    from app.db import session_scope
    from app.models import Project
    from app.training import scheduler
    from tests.helpers import import_lines, make_project, native_lines

    admin = users.create("root", "admin")
    project = make_project(client, admin, slug="sched")
    assert import_lines(client, admin, project["id"], native_lines(12, ranking=True)).status_code == 200
    checkpoint = tmp_path / "base"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    for kind in ("policy", "reward"):
        registered = client.post("/api/v1/models", headers=admin["headers"],
                                 json={"name": f"base-{kind}", "path": str(checkpoint), "kind": kind,
                                       "project_id": project["id"]})  # fmt: skip
        assert registered.status_code == 201, registered.text
    row = db.get(Project, project["id"])
    row.schedule = {"reward_every_pairs": 10}
    db.commit()
    with session_scope(write=True) as worker_a:
        assert scheduler.run_alone(worker_a, scheduler.LOCK_NAME)  # A's tick, mid-transaction
        assert scheduler.tick("worker-b") == []
    assert len(scheduler.tick("worker-b")) == 1
    assert scheduler.tick("worker-b") == []  # the job is queued: nothing more is due
