"""The datasets domain's job handlers: the `export` job, and the snapshot a training job trains on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.datasets.service import (
    build_snapshot,
    get_snapshot,
    mark_snapshot_failed,
    snapshot_dir,
    snapshot_location,
)
from app.db import session_scope, write_transaction
from app.errors import JobFailed, Unprocessable
from app.jobs.runner import JobContext
from app.models import DatasetSnapshot, Job


def run_export_job(ctx: JobContext) -> dict:
    """The `export` job: build the snapshot its params name."""
    with session_scope() as db:
        job = db.get(Job, ctx.job_id)
        snapshot = get_snapshot(db, job.params["dataset_id"])
        try:
            return build_snapshot(db, snapshot, progress=ctx.progress)
        except Unprocessable as error:  # EmptyExport included
            # Retrying cannot help: the snapshot has failed for good (a crash, in contrast, is retried).
            db.rollback()
            write_transaction(db)
            mark_snapshot_failed(db, snapshot, str(error))
            db.commit()
            raise


@dataclass(frozen=True)
class SnapshotRef:
    id: int
    path: Path
    sha256: str | None


def job_snapshot(ctx: JobContext, dataset_format: str | None) -> SnapshotRef | None:
    """A training job's dataset: the one it names, or (for kinds that train on one) a fresh snapshot built
    inline, recorded on the job first so a retry builds the same one. None for kinds that read prompts."""
    with session_scope(write=True) as db:
        job = db.get(Job, ctx.job_id)
        if job.dataset_id is None:
            if dataset_format is None:
                return None
            spec = job.params.get("snapshot") or {"format": dataset_format}
            snapshot = DatasetSnapshot(project_id=job.project_id, format=spec["format"], spec=spec, status="building",
                                       job_id=job.id, created_by_id=job.created_by_id)  # fmt: skip
            db.add(snapshot)
            db.flush()
            snapshot.path = snapshot_location(snapshot)
            job.dataset_id = snapshot.id
        dataset_id = job.dataset_id
    with session_scope() as db:
        snapshot = get_snapshot(db, dataset_id)
        if snapshot.status != "ready":
            if snapshot.job_id not in (ctx.job_id, None) and snapshot.status == "building":
                raise JobFailed(f"Dataset {dataset_id} is still being built by job {snapshot.job_id}.")
            ctx.progress(0.0, f"building dataset snapshot {dataset_id}")
            try:
                build_snapshot(db, snapshot, progress=lambda f, m: ctx.progress(0.0, f"snapshot: {m}"))
            except Exception as error:
                db.rollback()
                with session_scope(write=True) as failed:
                    mark_snapshot_failed(failed, failed.get(DatasetSnapshot, dataset_id), str(error))
                raise JobFailed(f"Building dataset snapshot {dataset_id} failed: {error}") from error
        # the trainer child reads local files: on an object store, this machine's copy (cached by content hash)
        return SnapshotRef(snapshot.id, snapshot_dir(snapshot), snapshot.sha256)
