"""Worker faults with real worker processes: kill -9 in mid-export, and several workers claiming at once.

Each worker is `python -m app.cli worker` on the test's database and artifact directory, with a short
heartbeat and stale limit so a dead worker's job is taken over within seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from app.datasets.service import request_snapshot, snapshot_dir
from app.datasets.snapshot_files import verify_snapshot
from app.db import session_scope
from app.imports.service import import_file
from app.models import DatasetSnapshot, Job, JobStatus
from app.projects.schemas import ProjectCreate
from app.projects.service import create_project
from tests.conftest import ROOT
from tests.helpers import native_lines

BIG_EXPORT_COMPARISONS = 6000
"""4 ranked completions each: 36,000 pair rows, several seconds of export (a window to stop it in)."""
WAIT_SECONDS = 120
"""Upper bound for any wait below; reaching it fails the test (it is a hang guard, not a timing check)."""


def _start_worker(db_url: str, log_path: Path, *extra: str) -> subprocess.Popen:
    env = os.environ | {
        "RANKFORGE_DATABASE_URL": db_url,
        "RANKFORGE_DATA_DIR": os.environ["RANKFORGE_DATA_DIR"],
        "RANKFORGE_WORKER_HEARTBEAT_SECONDS": "0.3",
        "RANKFORGE_WORKER_STALE_SECONDS": "2",
        "OMP_NUM_THREADS": "1",
    }
    log = open(log_path, "ab")  # noqa: SIM115 - the child owns it; closed with the test's tmp dir
    return subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--poll", "0.1", *extra], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _project_with_rankings(db_url: str, comparisons: int) -> int:
    with session_scope(db_url) as db:
        project = create_project(db, ProjectCreate(name="Fault project", mode="rank", overlap=1), None)
        import_file(db, project, native_lines(comparisons, k=4, ranking=True), "native", None)
        return project.id


def _request(db_url: str, project_id: int, **params) -> tuple[int, int, Path]:
    from app.models import Project

    with session_scope(db_url) as db:
        snapshot = request_snapshot(db, db.get(Project, project_id), {"format": "pairs"} | params, None)
        return snapshot.id, snapshot.job_id, snapshot_dir(snapshot)


def _job(db_url: str, job_id: int) -> Job:
    with session_scope(db_url) as db:
        job = db.get(Job, job_id)
        db.expunge(job)
        return job


def _partials(final_dir: Path) -> list[Path]:
    return sorted(final_dir.parent.glob(f".{final_dir.name}.partial-*"))


def _assert_never_half_written(final_dir: Path) -> None:
    """The final directory is either absent or complete: every file matches its manifest."""
    if final_dir.exists():
        verify_snapshot(final_dir)


def test_worker_killed_mid_export_is_retried_by_another_worker(db_url, tmp_path):
    project_id = _project_with_rankings(db_url, BIG_EXPORT_COMPARISONS)
    dataset_id, job_id, final_dir = _request(db_url, project_id)
    victim = _start_worker(db_url, tmp_path / "victim.log")
    rescuer = None
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while not _partials(final_dir):  # the victim has started writing rows into its hidden temp dir
            _assert_never_half_written(final_dir)
            assert victim.poll() is None, (tmp_path / "victim.log").read_text()
            assert time.monotonic() < deadline, "the worker never started the export"
            time.sleep(0.01)
        # Freeze it first so the state we kill it in can be checked: mid-export, nothing published.
        os.kill(victim.pid, signal.SIGSTOP)
        assert _partials(final_dir) and not final_dir.exists()
        job = _job(db_url, job_id)
        assert job.status == JobStatus.running and job.attempts == 1
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        leftover = _partials(final_dir)
        assert leftover, "a kill -9 leaves the hidden temp directory behind"

        rescuer = _start_worker(db_url, tmp_path / "rescuer.log")
        deadline = time.monotonic() + WAIT_SECONDS
        while (job := _job(db_url, job_id)).status not in (JobStatus.succeeded, JobStatus.failed):
            _assert_never_half_written(final_dir)
            assert rescuer.poll() is None, (tmp_path / "rescuer.log").read_text()
            assert time.monotonic() < deadline, f"the job was not taken over: {job.status} {job.message}"
            time.sleep(0.02)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
        if rescuer is not None:
            _stop(rescuer)

    assert job.status == JobStatus.succeeded, job.error
    assert job.attempts == 2
    assert job.worker_id.endswith(f":{rescuer.pid}")
    manifest = verify_snapshot(final_dir)
    assert manifest["rows"]["train"] + manifest["rows"]["test"] == BIG_EXPORT_COMPARISONS * 6
    assert not any(path.exists() for path in leftover) and not _partials(final_dir)
    with session_scope(db_url) as db:
        snapshot = db.get(DatasetSnapshot, dataset_id)
        assert snapshot.status == "ready" and snapshot.sha256 == manifest["sha256"]


@pytest.mark.parametrize("n_jobs", [9])
def test_three_workers_run_each_job_exactly_once(db_url, tmp_path, n_jobs):
    project_id = _project_with_rankings(db_url, 30)
    requested = [_request(db_url, project_id, split={"test_fraction": 0.2, "seed": seed}) for seed in range(n_jobs)]
    workers = [_start_worker(db_url, tmp_path / f"worker-{i}.log") for i in range(3)]
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            with session_scope(db_url) as db:
                statuses = db.scalars(select(Job.status).where(Job.id.in_([job for _, job, _ in requested]))).all()
            if all(s in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled) for s in statuses):
                break
            for i, worker in enumerate(workers):
                assert worker.poll() is None, (tmp_path / f"worker-{i}.log").read_text()
            assert time.monotonic() < deadline, f"jobs still open: {statuses}"
            time.sleep(0.05)
    finally:
        for worker in workers:
            _stop(worker)

    pids = {str(worker.pid) for worker in workers}
    with session_scope(db_url) as db:
        jobs = db.scalars(select(Job).where(Job.id.in_([job for _, job, _ in requested]))).all()
        for job in jobs:
            assert job.status == JobStatus.succeeded, job.error
            assert job.attempts == 1, f"job {job.id} was claimed {job.attempts} times"
            assert job.worker_id.rsplit(":", 1)[1] in pids
        for dataset_id, _, final_dir in requested:
            snapshot = db.get(DatasetSnapshot, dataset_id)
            assert snapshot.status == "ready"
            assert verify_snapshot(final_dir)["sha256"] == snapshot.sha256
