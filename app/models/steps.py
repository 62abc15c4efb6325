"""Step labels: one rater's labels on the steps of one agent trajectory (app.steps describes the vocabulary)."""

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedMixin, IdMixin


class StepJudgment(IdMixin, CreatedMixin, Base):
    """One rater's labels on every step of one trajectory (a completion whose continuation has steps).

    Counted by the same rules as judgments (app.judgments.selections.counted_steps): source, voided. One per
    (completion, rater): a second submit returns the first (double submit never makes two).
    """

    __tablename__ = "step_judgment"
    __table_args__ = (
        UniqueConstraint("completion_id", "rater_id"),
        Index("ix_step_judgment_project_id_created_at", "project_id", "created_at"),
    )

    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    completion_id: Mapped[int] = mapped_column(ForeignKey("completion.id", ondelete="CASCADE"), index=True)
    rater_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), index=True)
    """None for imported step labels (their author is not a user here)."""
    n_steps: Mapped[int]
    """The trajectory's step count when it was labelled (labels has this many entries)."""
    labels: Mapped[list] = mapped_column()
    """One entry per step, in order: {"label": "good" | "bad" | "neutral" | null, "tags": [failure tag, ...]}.
    null: not labelled (only allowed after the first error: see app.steps.labels)."""
    first_error: Mapped[int | None]
    """Index of the step the rater marked "first error here" (its label is "bad"); None: no error found. Steps after it
    are "after error": not required, never counted in agreement, cut from the stepwise export."""
    source: Mapped[str] = mapped_column(String(16), default="human")
    """human | ai | imported (as Judgment.source)."""
    time_spent_ms: Mapped[int | None]
    guideline_version: Mapped[int | None]
    voided_at: Mapped[datetime | None]
    """Set when the labels are voided: kept for the record, counted nowhere."""


class TrajectoryLease(IdMixin, CreatedMixin, Base):
    """A lease of one trajectory to one rater: an assignment (app.models.Assignment) whose task is a trajectory
    instead of a comparison. Same meaning and states (active holds a slot until `expires_at` = claim time +
    the project's `lease_seconds`; submitted | expired | revoked), handed out by the assignment contract's
    mechanisms (app.steps.service.claim_trajectory). A trajectory's slots are the project's overlap: counted step
    judgments + live leases never exceed it. One row per (trajectory, rater): a rater gets a trajectory once."""

    __tablename__ = "trajectory_lease"
    __table_args__ = (
        UniqueConstraint("completion_id", "rater_id"),
        Index("ix_trajectory_lease_rater_id_project_id_state", "rater_id", "project_id", "state"),
        Index("ix_trajectory_lease_state_expires_at", "state", "expires_at"),
    )

    completion_id: Mapped[int] = mapped_column(ForeignKey("completion.id", ondelete="CASCADE"), index=True)
    rater_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16), default="active")
    """As Assignment.state: active (holds a slot while unexpired) | submitted | expired | revoked"""
    expires_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
