from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedMixin, IdMixin


class Mode(StrEnum):
    pairwise = "pairwise"
    rank = "rank"


class ProjectStatus(StrEnum):
    active = "active"
    paused = "paused"
    archived = "archived"


class Project(IdMixin, CreatedMixin, Base):
    __tablename__ = "project"

    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    mode: Mapped[str] = mapped_column(String(16), default=Mode.pairwise)
    overlap: Mapped[int] = mapped_column(default=1)
    """Judgments wanted per comparison."""
    max_overlap: Mapped[int] = mapped_column(default=1)
    """Adaptive ceiling: one more rater (up to this) when the first ones disagree."""
    allow_ties: Mapped[bool] = mapped_column(default=True)
    attributes: Mapped[list] = mapped_column(default=list)
    """Attribute scales: [{"name": "helpful", "label": "Helpful", "min": 1, "max": 7}]."""
    gold_rate: Mapped[float] = mapped_column(default=0.0)
    lease_seconds: Mapped[int] = mapped_column(default=1200)
    daily_cap: Mapped[int | None]
    """Most judgments one rater may submit per day in this project (None: no cap)."""
    members_only: Mapped[bool] = mapped_column(default=False)
    allow_new_answers: Mapped[bool] = mapped_column(default=False)
    """Raters may write an answer from scratch (an edit without a parent), not only rewrite the best one."""
    practice_required: Mapped[int] = mapped_column(default=0)
    """Qualification: practice items a rater answers before real work is served (0: no practice, no gate)."""
    practice_pass_rate: Mapped[float] = mapped_column(default=0.8)
    """Qualification: the mean agreement with gold over those practice items that passes."""
    pay_unit: Mapped[str | None] = mapped_column(String(16))
    """None (no pay report rate) | judgment | hour"""
    pay_rate: Mapped[float | None]
    """Pay per judgment or per active hour, in the project's currency."""
    status: Mapped[str] = mapped_column(String(16), default=ProjectStatus.active)
    guideline_version: Mapped[int] = mapped_column(default=1)
    schedule: Mapped[dict] = mapped_column(default=dict)
    """Retraining schedule: {"reward_every_judgments": N, "reward_every_minutes": T}."""
    round_recipe: Mapped[dict] = mapped_column(default=dict)
    """How a round of the loop runs (app.training.rounds.RoundRecipe); empty: the defaults."""
    group_weights: Mapped[dict | None] = mapped_column()
    """Target shares of rater groups for the post-stratified leaderboard ({"locale=de": 0.5, ...}; one label key;
    app.quality.poststrat); None: no post-stratified ranking."""
    schedule_notices: Mapped[dict | None] = mapped_column()
    """Why the worker skipped this project's schedule or rounds on its last try ({"schedule": text, "rounds":
    text}; app.training.scheduler.note_problem), shown on the project's page; cleared once it runs again."""
    step_tags: Mapped[list | None] = mapped_column()
    """Failure tags raters may put on a trajectory's steps; None: the defaults (app.steps.labels.DEFAULT_STEP_TAGS)."""
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))


class GuidelineVersion(IdMixin, CreatedMixin, Base):
    __tablename__ = "guideline_version"
    __table_args__ = (UniqueConstraint("project_id", "version"),)

    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    version: Mapped[int]
    body: Mapped[str] = mapped_column(Text, default="")
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))


class ProjectMember(Base):
    __tablename__ = "project_member"

    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), primary_key=True)
    added_at: Mapped[datetime | None]
