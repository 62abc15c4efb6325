"""`rankforge worker`: the worker's composition root.

The queue (app.jobs) knows no job kind; each domain owns the handlers of its kinds in its `handlers.py`, and this
module wires them together: which handler runs which kind, and what an idle worker does between jobs.
"""

from __future__ import annotations

import time

from app.datasets.handlers import run_export_job
from app.db import session_scope
from app.jobs import runner
from app.jobs.runner import Handler, IdleTask
from app.judges.endpoint_judge import run_any_judge_job
from app.models import JobKind
from app.quality.figures import refresh_due
from app.registry.handlers import run_serve_job
from app.store import prune_cache
from app.training.endpoint_generate import run_generate_job
from app.training.handlers import run_training_job
from app.training.kinds import TRAINING_KINDS
from app.training.rounds import tick as advance_rounds
from app.training.scheduler import acquire_lock, held_alone
from app.training.scheduler import tick as schedule_training
from app.verifiers.handlers import run_verify_job
from app.webhooks.delivery import deliver_due, run_in_background

FIGURES_LOCK = "figures"
HANDLERS: dict[str, Handler] = {
    JobKind.export: run_export_job,
    JobKind.verify: run_verify_job,
    JobKind.serve: run_serve_job,  # a local version served as an endpoint while the job runs
    **dict.fromkeys(TRAINING_KINDS, run_training_job),
    JobKind.generate: run_generate_job,  # a policy that is an endpoint is asked over HTTP in the worker, else as above
    JobKind.judge: run_any_judge_job,  # a trainer kind whose inputs and verdicts the judges domain owns (an endpoint
    # judge is asked over HTTP in the worker)
}


def refresh_figures(worker_id: str) -> list[int]:
    """Idle task: recompute the cached figures of large projects whose judgments changed (app.quality.figures),
    under the `figures` lease and, on PostgreSQL, its advisory lock: one worker at a time. The recompute ends its
    session's transaction after each read (`end_transaction`): at ten million judgments its computation takes
    minutes, and an open transaction would hold a snapshot that long (the rating queue's dead index entries could
    not be skipped meanwhile). So the advisory lock is the session-level one, on a connection of its own that
    holds no transaction (`held_alone`)."""
    with session_scope() as db:
        if not acquire_lock(db, worker_id, name=FIGURES_LOCK):
            return []
    with held_alone(FIGURES_LOCK) as alone:
        if not alone:
            return []
        with session_scope() as db:
            return list(refresh_due(db, end_transaction=db.commit))


PRUNE_EVERY_SECONDS = 60.0
_last_prune = float("-inf")


def prune_artifact_cache(worker_id: str) -> list[str]:
    """Idle task: this machine's cache of store artifacts back under RANKFORGE_CACHE_MAX_GB, least recently used
    first (app.store.prune_cache; entries a running job holds stay). At most once a minute: every cache write
    prunes already, this only catches entries a job held over the cap, and the walk reads every entry's manifest,
    which the idle loop would otherwise repeat each poll."""
    global _last_prune
    if time.monotonic() - _last_prune < PRUNE_EVERY_SECONDS:
        return []
    _last_prune = time.monotonic()
    return prune_cache()


IDLE_TASKS: list[IdleTask] = [schedule_training, advance_rounds, refresh_figures, prune_artifact_cache]
"""Run with the worker id whenever the queue is empty: retraining schedules, rounds and the large projects'
figures (each under a lease lock: one worker acts), and this machine's artifact cache pruned to its cap."""


def run_worker(*, once: bool = False, poll_seconds: float = 1.0, worker_id: str | None = None) -> None:
    """Run jobs until stopped (or one, with `once`). Webhook deliveries go out from a thread of their own, so they
    keep flowing while a long training job runs (a slow receiver never holds up a job, nor a job a receiver)."""
    worker_id = worker_id or runner.default_worker_id()
    if once:
        runner.run_loop(HANDLERS, IDLE_TASKS, once=True, poll_seconds=poll_seconds, worker_id=worker_id)
        deliver_due(worker_id)
        return
    sender, stop_sending = run_in_background(worker_id)
    try:
        runner.run_loop(HANDLERS, IDLE_TASKS, poll_seconds=poll_seconds, worker_id=worker_id)
    finally:
        stop_sending.set()
        sender.join(timeout=10)


def run_one(worker_id: str) -> int | None:
    """Claim and run one job; its id, or None when the queue is empty."""
    return runner.run_one(worker_id, HANDLERS)
