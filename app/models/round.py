"""Rounds of the loop: the current policy writes, raters rate, reward and policy are updated, the new policy is
evaluated against the previous one. A round is made of ordinary jobs; this row remembers which and where it is."""

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedMixin, IdMixin


class RoundStatus(StrEnum):
    generating = "generating"
    rating = "rating"
    training = "training"
    evaluating = "evaluating"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"


ROUND_ENDED = (RoundStatus.done, RoundStatus.failed, RoundStatus.cancelled)
ROUND_ACTIVE = (RoundStatus.generating, RoundStatus.rating, RoundStatus.training, RoundStatus.evaluating)


class Round(IdMixin, CreatedMixin, Base):
    __tablename__ = "round"
    __table_args__ = (UniqueConstraint("project_id", "number"),)

    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    number: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), default=RoundStatus.generating)
    recipe: Mapped[dict] = mapped_column(default=dict)
    """The project's round recipe as it was when the round started."""
    trigger: Mapped[str] = mapped_column(String(200), default="manual")
    prompt_ids: Mapped[list] = mapped_column(default=list)
    """The prompts this round generates for (never the evaluation prompts)."""
    policy_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id", ondelete="SET NULL"))
    new_policy_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id", ondelete="SET NULL"))
    reward_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id", ondelete="SET NULL"))
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_snapshot.id", ondelete="SET NULL"))
    jobs: Mapped[dict] = mapped_column(default=dict)
    """Step name -> job id: generate, score, reward, policy, eval_previous, eval, eval_score."""
    comparison_ids: Mapped[list] = mapped_column(default=list)
    eval_comparison_ids: Mapped[list] = mapped_column(default=list)
    eval_scores: Mapped[dict] = mapped_column(default=dict)
    """Completion id (as text) -> reward-model score, from the evaluation's score job."""
    metrics: Mapped[dict] = mapped_column(default=dict)
    step_times: Mapped[dict] = mapped_column(default=dict)
    """Stage -> seconds it took (generating, rating, training, evaluating)."""
    error: Mapped[str | None] = mapped_column(Text)
    failed_job_id: Mapped[int | None]
    stage_started_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
