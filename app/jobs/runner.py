"""Running queued jobs: claim one, run its kind's handler with a heartbeat, record how it ended.

The queue knows no job kind: `run_one(worker_id, handlers)` gets the handlers from the worker's composition
root (app.worker), which imports each domain's `handlers.py`. A handler receives a `JobContext` (the job's id,
progress/metrics/log reporting, the cancel flag) and returns the job's result dict.

A heartbeat thread refreshes the claim every few seconds and watches for cancel requests. A worker that dies
(kill -9) stops heartbeating; any worker then puts its job back in the queue (or fails it after the last
attempt): see service.recover_stale.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence

from app.config import get_settings
from app.db import session_scope
from app.errors import JobCancelled
from app.jobs import service
from app.store import cache_leases

log = logging.getLogger("rankforge.worker")


class JobContext:
    """What a running job may touch: its id, progress/metrics reporting and the cancel flag."""

    def __init__(self, job_id: int, kind: str, worker_id: str):
        self.job_id, self.kind, self.worker_id = job_id, kind, worker_id
        self.cancel_event = threading.Event()

    def check_cancelled(self) -> None:
        if self.cancel_event.is_set():
            raise JobCancelled()

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


Handler = Callable[[JobContext], dict]
IdleTask = Callable[[str], object]
"""Called with the worker id whenever the queue is empty (schedules, webhook deliveries)."""


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


def run_one(worker_id: str, handlers: Mapping[str, Handler]) -> int | None:
    """Claim and run one job of a kind in `handlers`; returns its id, or None when the queue is empty."""
    settings = get_settings()
    with session_scope(write=True) as db:
        service.recover_stale(db, settings.worker_stale_seconds)
    with session_scope(write=True) as db:
        job = service.claim(db, worker_id, kinds=list(handlers))
        if job is None:
            return None
        job_id, kind = job.id, job.kind
    ctx = JobContext(job_id, kind, worker_id)
    beat = Heartbeat(ctx, settings.worker_heartbeat_seconds)
    beat.start()
    try:
        with cache_leases():  # the cached artifacts this job reads stay while it runs (app.store.prune_cache)
            result = handlers[kind](ctx)
    except JobCancelled:
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
    archive_job_dir(job_id)
    return job_id


def archive_job_dir(job_id: int) -> str | None:
    """With an object store (app.store), the job's directory on this machine (spec, inputs, logs, outputs not
    published elsewhere) goes to the store as `jobs/<id>/<hex>` once the job has ended, so it outlives the worker's
    machine; the job's log names the location. Best effort: a store error is logged, the job's outcome stands.
    A local store keeps the directory where it is (it is the store)."""
    import secrets

    from app.store import get_store

    store = get_store()
    work = store.data_dir / "jobs" / str(job_id)
    if store.local or not work.is_dir():
        return None
    location = store.location("jobs", str(job_id), secrets.token_hex(4))
    try:
        store.publish(work, location)
    except Exception as error:  # noqa: BLE001 - the job has ended; its files stay on this machine
        log.warning("job %s: its directory was not archived to the artifact store: %s", job_id, error)
        return None
    with session_scope(write=True) as db:
        service.append_log(db, job_id, f"\njob files: {location}\n")
    return location


def run_loop(handlers: Mapping[str, Handler], idle_tasks: Sequence[IdleTask] = (), *, once: bool = False,
             poll_seconds: float = 1.0, worker_id: str | None = None) -> None:  # fmt: skip
    worker_id = worker_id or default_worker_id()
    log.info("worker %s started (kinds: %s)", worker_id, ", ".join(handlers))
    while True:
        job_id = run_one(worker_id, handlers)
        if once:
            return
        if job_id is None:
            for task in idle_tasks:
                try:
                    task(worker_id)
                except Exception:  # noqa: BLE001 - one failing idle task must not stop the worker
                    log.exception("idle task %s failed", getattr(task, "__name__", task))
            time.sleep(poll_seconds)
