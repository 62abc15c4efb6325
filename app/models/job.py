"""Background jobs and their per-step metrics."""

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedMixin, IdMixin
from trainer.params import DEFAULTS as TRAINER_DEFAULTS
from trainer.params import KIND_INFO as TRAINER_KIND_INFO
from trainer.params import KINDS as TRAINER_KINDS

APP_JOB_KINDS: tuple[str, ...] = ("export", "verify", "serve")
"""Job kinds the app runs itself: `export` (a dataset snapshot), `verify` (verdicts and pass rates of a version),
`serve` (a registered local version served as an endpoint by `transformers serve` or vLLM while the job runs)."""
JobKind = StrEnum("JobKind", [(kind, kind) for kind in (*APP_JOB_KINDS, *TRAINER_KINDS)])
"""Every job kind: the app's own and the trainer's, from their one list (trainer.params)."""
KINDS_WITH_CURVES: frozenset[str] = frozenset(k for k, info in TRAINER_KIND_INFO.items() if info.curves)
"""Kinds that report training curves while they run (the job page keeps a place for them): the kind table says."""
PARAM_DEFAULTS: dict[str, dict] = TRAINER_DEFAULTS
"""Each trainer kind's default hyperparameters (the queue's pages read them here, not in the kind table)."""


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


TERMINAL_STATUSES = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class Job(IdMixin, CreatedMixin, Base):
    __tablename__ = "job"
    __table_args__ = (Index("ix_job_status_created_at", "status", "created_at"),)

    kind: Mapped[str] = mapped_column(String(16))
    project_id: Mapped[int | None] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.queued)
    progress: Mapped[float] = mapped_column(default=0.0)
    message: Mapped[str] = mapped_column(Text, default="")
    params: Mapped[dict] = mapped_column(default=dict)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_snapshot.id", ondelete="SET NULL"))
    base_model_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id", ondelete="SET NULL"))
    reward_model_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id", ondelete="SET NULL"))
    result: Mapped[dict] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    log_tail: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=3)
    worker_id: Mapped[str | None] = mapped_column(String(100))
    heartbeat_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))


class JobMetric(IdMixin, CreatedMixin, Base):
    __tablename__ = "job_metric"
    __table_args__ = (Index("ix_job_metric_job_id_step", "job_id", "step"),)

    job_id: Mapped[int] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"))
    step: Mapped[int]
    values: Mapped[dict] = mapped_column()


class JobDependency(Base):
    """`job_id` waits until `depends_on_id` has succeeded (claim skips it); a failed dependency stops it."""

    __tablename__ = "job_dependency"

    job_id: Mapped[int] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), primary_key=True)
    depends_on_id: Mapped[int] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), primary_key=True,
                                               index=True)


class SchedulerLock(Base):
    """One row per named lock; the scheduler holds it by lease so one acts among many workers."""

    __tablename__ = "scheduler_lock"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(100))
    expires_at: Mapped[datetime | None]
