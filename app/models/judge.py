"""Judges (AI feedback): a model version plus a method that writes AI judgments, the project's AI policy, the
versioned question template of generative judges, and the AI side of each AI judgment.

An AI verdict is an ordinary `judgment` row with source "ai" (no rater, no assignment), so exports, filters and
the comparison's ranking read it like any other; its judge, confidence, template version and the judge's
pairwise probabilities live in `ai_verdict`, one row per judgment. (comparison, judge, template version) is unique:
judging the same comparison twice with the same judge and template makes no second row.
"""

from sqlalchemy import Float, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedMixin, IdMixin
from trainer.params import JUDGE_METHODS as _METHODS

JUDGE_METHODS: tuple[str, ...] = _METHODS
"""reward (a reward model), generative (a causal LM asked a question), rules (the prompts' reference rules)."""
AI_POLICIES: tuple[str, ...] = ("off", "shadow", "prelabel", "route")
"""off: no AI judgments count or are expected; shadow: the judge labels, nothing changes for raters (measuring
only); prelabel: a confident AI verdict is one of the votes a comparison requires; route: a confident AI verdict
completes the comparison, the uncertain go to humans, most uncertain first."""


class Judge(IdMixin, CreatedMixin, Base):
    __tablename__ = "judge"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    method: Mapped[str] = mapped_column(String(16))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id", ondelete="SET NULL"))
    """The reward model (reward) or causal LM (generative); None for rules."""
    params: Mapped[dict] = mapped_column(default=dict)
    """Judge job hyperparameters fixed for this judge (trainer.params.JudgeArgs, e.g. labels, batch_size)."""
    active: Mapped[bool] = mapped_column(default=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))


class JudgeTemplate(IdMixin, CreatedMixin, Base):
    """The project's generative-judge question, versioned like guidelines (version 0 is the built-in default)."""

    __tablename__ = "judge_template"
    __table_args__ = (UniqueConstraint("project_id", "version"),)

    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    version: Mapped[int]
    body: Mapped[str] = mapped_column(Text)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))


class AIPolicy(Base):
    """A project's AI policy (no row: off)."""

    __tablename__ = "ai_policy"

    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), primary_key=True)
    policy: Mapped[str] = mapped_column(String(16), default="off")
    judge_id: Mapped[int | None] = mapped_column(ForeignKey("judge.id", ondelete="SET NULL"))
    """The judge whose verdicts the policy acts on (other judges are measured only)."""
    threshold: Mapped[float] = mapped_column(Float, default=0.9)
    """An AI verdict counts (prelabel, route) when its confidence is at least this."""
    template_version: Mapped[int] = mapped_column(default=0)
    """The project's current judge template (0: the built-in default, trainer.params.DEFAULT_JUDGE_TEMPLATE)."""
    gate: Mapped[dict | None] = mapped_column()
    """The judge gate (app.judges.gates): {max_flip_rate, min_accuracy, min_sample} and, once it tripped, `tripped`
    (when, which judge, the figures that failed); None: no gate."""


class AIVerdict(IdMixin, CreatedMixin, Base):
    __tablename__ = "ai_verdict"
    __table_args__ = (UniqueConstraint("comparison_id", "judge_id", "template_version"),)

    judgment_id: Mapped[int] = mapped_column(ForeignKey("judgment.id", ondelete="CASCADE"), unique=True)
    comparison_id: Mapped[int] = mapped_column(ForeignKey("comparison.id", ondelete="CASCADE"))
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    judge_id: Mapped[int] = mapped_column(ForeignKey("judge.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("job.id", ondelete="SET NULL"))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id", ondelete="SET NULL"))
    method: Mapped[str] = mapped_column(String(16))
    template_version: Mapped[int] = mapped_column(default=0)
    """The template version a generative judge read (0 for the built-in one and for other methods)."""
    confidence: Mapped[float] = mapped_column(Float)
    p_first: Mapped[float | None] = mapped_column(Float)
    """Mean probability the judge preferred the first response shown, over the orders asked (generative only)."""
    detail: Mapped[dict] = mapped_column(default=dict)
    """The judge's pairwise probabilities and strengths as it wrote them."""
    counted: Mapped[bool] = mapped_column(default=False)
    """The AI policy counted this verdict as a vote (prelabel) or as completing the comparison (route)."""
    reviewed: Mapped[str | None] = mapped_column(String(16))
    """confirmed | flipped by a rater in the review queue; None: not reviewed."""


class JudgeAnswerCache(IdMixin, CreatedMixin, Base):
    """What an endpoint judge answered to one question (the filled template: prompt, pair, order, template version
    and guidelines all in it), so the same question is never paid for twice, across jobs, judges and retries."""

    __tablename__ = "judge_answer_cache"
    __table_args__ = (UniqueConstraint("model_version_id", "question_sha256", "settings"),)

    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_version.id", ondelete="CASCADE"))
    question_sha256: Mapped[str] = mapped_column(String(64))
    settings: Mapped[str] = mapped_column(String(64))
    """Hash of what else shapes the answer: labels, samples, temperature, JSON output."""
    p_first: Mapped[float | None] = mapped_column(Float)
    """P(the first response shown wins); None: the answer could not be parsed (an abstention)."""
    answer: Mapped[dict] = mapped_column(default=dict)
    """The raw answer texts (shortened), how p_first was read (logprobs or samples) and the token usage."""
