"""`rankforge worker`: claims queued jobs, runs them, heartbeats, records progress and metrics.

A heartbeat thread refreshes the claim every few seconds and watches for cancel requests. Jobs that
train run in a child process (app.jobs.training), so a crash or OOM never takes the worker down.
A worker that dies (kill -9) stops heartbeating; any worker then puts its job back in the queue
(or fails it after the last attempt).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable

from app.config import get_settings
from app.db import session_scope
from app.jobs import service

log = logging.getLogger("rankforge.worker")


class Cancelled(Exception):
    """The job was cancelled while running."""


class JobContext:
    """What a running job may touch: its id, progress/metrics reporting and the cancel flag."""

    def __init__(self, job_id: int, kind: str, worker_id: str):
        self.job_id, self.kind, self.worker_id = job_id, kind, worker_id
        self.cancel_event = threading.Event()

    def check_cancelled(self) -> None:
        if self.cancel_event.is_set():
            raise Cancelled()

    def progress(self, fraction: float, message: str | None = None) -> None:
        self.check_cancelled()
        with session_scope(write=True) as db:
            service.set_progress(db, self.job_id, fraction, message)

    def metrics(self, step: int, values: dict) -> None:
        with session_scope(write=True) as db:
            service.add_metrics(db, self.job_id, step, values)

    def log(self, text: str) -> None:
        with session_scope(write=True) as db:
            service.append_log(db, self.job_id, text)


def _run_export(ctx: JobContext) -> dict:
    from app.datasets.service import build_snapshot_for_job

    return build_snapshot_for_job(ctx)


def _run_training(ctx: JobContext) -> dict:
    from app.jobs.training import run_training_job

    return run_training_job(ctx)


RUNNERS: dict[str, Callable[[JobContext], dict]] = {
    "export": _run_export,
    **{kind: _run_training for kind in ("reward", "dpo", "kto", "ppo", "grpo", "rloo", "generate", "score")},
}


class Heartbeat(threading.Thread):
    def __init__(self, ctx: JobContext, every: float):
        super().__init__(daemon=True, name=f"heartbeat-{ctx.job_id}")
        self.ctx, self.every, self.stopped = ctx, every, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                with session_scope(write=True) as db:
                    if service.heartbeat(db, self.ctx.job_id, self.ctx.worker_id):
                        self.ctx.cancel_event.set()
            except Exception:  # noqa: BLE001 - a missed beat is retried; the job goes on
                log.exception("heartbeat failed")


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_one(worker_id: str) -> int | None:
    """Claim and run one job; returns its id, or None when the queue is empty."""
    settings = get_settings()
    with session_scope(write=True) as db:
        service.recover_stale(db, settings.worker_stale_seconds)
    with session_scope(write=True) as db:
        job = service.claim(db, worker_id, kinds=list(RUNNERS))
        if job is None:
            return None
        job_id, kind = job.id, job.kind
    ctx = JobContext(job_id, kind, worker_id)
    beat = Heartbeat(ctx, settings.worker_heartbeat_seconds)
    beat.start()
    try:
        result = RUNNERS[kind](ctx)
    except Cancelled:
        with session_scope(write=True) as db:
            service.fail(db, job_id, worker_id, "cancelled")
    except Exception as error:  # noqa: BLE001 - any failure is recorded on the job
        log.warning("job %s failed: %s", job_id, error)
        message = str(error) or error.__class__.__name__
        with session_scope(write=True) as db:
            service.append_log(db, job_id, traceback.format_exc()[-3000:])
            service.fail(db, job_id, worker_id, message)
    else:
        with session_scope(write=True) as db:
            service.finish(db, job_id, worker_id, result)
    finally:
        beat.stopped.set()
        beat.join(timeout=5)
    return job_id


def run_worker(*, once: bool = False, poll_seconds: float = 1.0, worker_id: str | None = None) -> None:
    worker_id = worker_id or default_worker_id()
    log.info("worker %s started", worker_id)
    while True:
        job_id = run_one(worker_id)
        if once:
            return
        if job_id is None:
            _scheduler_tick(worker_id)
            time.sleep(poll_seconds)


def _scheduler_tick(worker_id: str) -> None:
    """Retraining schedules (per project), evaluated under a lock so one worker acts."""
    try:
        from app.jobs.scheduler import tick
    except ModuleNotFoundError:
        return
    tick(worker_id)
