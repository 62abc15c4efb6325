"""Prompts, completions and the comparisons raters rank."""

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedMixin, IdMixin

UNSCORED_GAP = 1.0e9
"""score_gap of a comparison no reward model has scored: it sorts after scored ones."""


class Prompt(IdMixin, CreatedMixin, Base):
    __tablename__ = "prompt"
    __table_args__ = (
        UniqueConstraint("project_id", "external_id"),
        # Exports ask whether a project has chat prompts (app.datasets.service.has_multi_message_chats); most have
        # none, and the answer should not read every prompt of a ten-million-pair project.
        Index("ix_prompt_chat", "project_id", sqlite_where=text("is_chat"), postgresql_where=text("is_chat")),
    )

    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    external_id: Mapped[str | None] = mapped_column(String(200))
    messages: Mapped[list] = mapped_column()
    """Always a list of {role, content}; a plain-text prompt is one user message with is_chat false."""
    is_chat: Mapped[bool] = mapped_column(default=False)
    meta: Mapped[dict] = mapped_column("metadata", default=dict)
    batch: Mapped[str | None] = mapped_column(String(100))
    priority: Mapped[int] = mapped_column(default=0)
    reference: Mapped[dict | None] = mapped_column()
    """Verifiable prompts: the answer and the rule comparing to it (trainer.rewards.verifier.check_reference)."""
    tests: Mapped[dict | None] = mapped_column()
    """Verifiable prompts: Python tests an answer's code must pass, {code, entry_point?, prefix?}."""

    @property
    def value(self) -> str | list[dict]:
        """The prompt as models and exports take it: its messages when it is a chat, else its text."""
        return self.messages if self.is_chat else self.messages[0]["content"]


CONTINUES_SQL = {"postgresql": "(metadata -> 'messages') IS NOT NULL",
                 "sqlite": "json_extract(metadata, '$.messages') IS NOT NULL"}
"""A completion that continues the conversation (its metadata holds app.imports.messages.CONTINUATION_KEY), per
dialect: the partial index's predicate, which a query repeats to use it (tests/test_migrations.py checks the key)."""


class Completion(IdMixin, CreatedMixin, Base):
    __tablename__ = "completion"
    __table_args__ = (
        # Continuations are rare; exports look for them in every project (has_multi_message_chats).
        Index("ix_completion_continues", "prompt_id", sqlite_where=text(CONTINUES_SQL["sqlite"]),
              postgresql_where=text(CONTINUES_SQL["postgresql"])),
    )

    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompt.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(Text)
    model_name: Mapped[str | None] = mapped_column(String(200))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id", ondelete="SET NULL"))
    params: Mapped[dict] = mapped_column(default=dict)
    meta: Mapped[dict] = mapped_column("metadata", default=dict)
    source: Mapped[str] = mapped_column(String(16), default="model")
    """model | human_edit (an edit: a rater's rewrite of `parent_id`, or a new answer when parent_id is None)"""
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("completion.id", ondelete="SET NULL"), index=True)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), index=True)
    judgment_id: Mapped[int | None] = mapped_column(ForeignKey("judgment.id", ondelete="SET NULL"), index=True)
    """Edits: the author's judgment the edit came with (its ranking says what the parent beat)."""
    guideline_version: Mapped[int | None]
    rejected_at: Mapped[datetime | None]
    """Edits: set when an admin rejected the edit; a rejected edit leaves every export."""
    rejected_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))


class Comparison(IdMixin, CreatedMixin, Base):
    """One prompt with 2..K completions to rank.

    `n_judgments` and `n_leases` (live assignments) are counters kept in the same transaction as
    the rows they count, so "judgments + live leases < required" is one indexed predicate.
    """

    __tablename__ = "comparison"
    __table_args__ = (
        # The queue: only comparisons with a free slot, in claim order.
        Index(
            "ix_comparison_queue",
            "project_id",
            text("priority DESC"),
            "score_gap",
            "id",
            sqlite_where=text("n_judgments + n_leases < required"),
            postgresql_where=text("n_judgments + n_leases < required"),
        ),
    )

    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompt.id", ondelete="CASCADE"), index=True)
    completion_ids: Mapped[list] = mapped_column()
    is_gold: Mapped[bool] = mapped_column(default=False)
    gold_ranking: Mapped[list | None] = mapped_column()
    """Known ranking of a gold item: tie groups of completion ids, best first."""
    practice: Mapped[bool] = mapped_column(default=False)
    """A practice item: a gold comparison with an `explanation`, served to new raters with feedback, never in the
    queue (its `required` is 0) and never judged into exports or statistics (answers live in practice_answer)."""
    explanation: Mapped[str | None] = mapped_column(Text)
    required: Mapped[int] = mapped_column(default=1)
    n_judgments: Mapped[int] = mapped_column(default=0)
    n_leases: Mapped[int] = mapped_column(default=0)
    priority: Mapped[int] = mapped_column(default=0)
    score_gap: Mapped[float] = mapped_column(default=UNSCORED_GAP)
    batch: Mapped[str | None] = mapped_column(String(100))
    meta: Mapped[dict] = mapped_column("metadata", default=dict)


class Assignment(IdMixin, CreatedMixin, Base):
    """A lease of one comparison to one rater, with the display order that rater saw."""

    __tablename__ = "assignment"
    __table_args__ = (
        UniqueConstraint("comparison_id", "rater_id"),
        Index("ix_assignment_rater_id_project_id_state", "rater_id", "project_id", "state"),
        Index("ix_assignment_state_expires_at", "state", "expires_at"),
    )

    comparison_id: Mapped[int] = mapped_column(ForeignKey("comparison.id", ondelete="CASCADE"))
    rater_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    display_order: Mapped[list] = mapped_column()
    state: Mapped[str] = mapped_column(String(16), default="active")
    """active (holds a slot) | submitted | skipped | expired"""
    expires_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    skip_reason: Mapped[str | None] = mapped_column(String(200))


class Judgment(IdMixin, CreatedMixin, Base):
    """One rater's verdict on one comparison."""

    __tablename__ = "judgment"
    __table_args__ = (
        UniqueConstraint("comparison_id", "rater_id"),
        Index("ix_judgment_project_id_created_at", "project_id", "created_at"),
    )

    comparison_id: Mapped[int] = mapped_column(ForeignKey("comparison.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    assignment_id: Mapped[int | None] = mapped_column(
        ForeignKey("assignment.id", ondelete="SET NULL"), unique=True
    )
    rater_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), index=True)
    """None for imported judgments (their author is not a user here)."""
    ranking: Mapped[list] = mapped_column()
    """Tie groups of completion ids, best first: [[c3], [c1, c2]]."""
    attributes: Mapped[dict] = mapped_column(default=dict)
    rationale: Mapped[str | None] = mapped_column(Text)
    flags: Mapped[list] = mapped_column(default=list)
    time_spent_ms: Mapped[int | None]
    active_ms: Mapped[int | None]
    """Active time: the page was visible and the rater interacted; idle gaps over a threshold do not count."""
    guideline_version: Mapped[int | None]
    source: Mapped[str] = mapped_column(String(16), default="human")
    """human | ai | battle | imported (app.judgments.selections names which figures count which)"""
    top_completion_id: Mapped[int | None]
    """The completion ranked first alone (None when the top group is a tie): agreement and reliability
    statistics read this column instead of parsing every ranking."""
    chosen_position: Mapped[int | None]
    """Display position (0-based) of the option ranked first alone, for position-bias checks."""
    voided_at: Mapped[datetime | None]
    """When the vote was voided (a battle whose side failed): a voided judgment is kept for the record but no
    figure counts it (app.judgments.selections)."""


class PracticeAnswer(IdMixin, CreatedMixin, Base):
    """A rater's answer to a practice item, scored against its gold ranking. Not a judgment: practice never enters
    exports, statistics or the queue's counters."""

    __tablename__ = "practice_answer"
    __table_args__ = (UniqueConstraint("comparison_id", "rater_id"),
                      Index("ix_practice_answer_project_id_rater_id", "project_id", "rater_id"))  # fmt: skip

    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    comparison_id: Mapped[int] = mapped_column(ForeignKey("comparison.id", ondelete="CASCADE"))
    rater_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    ranking: Mapped[list] = mapped_column()
    score: Mapped[float]
    """Agreement with the gold ranking: the share of option pairs ordered (better / equal / worse) as gold orders them."""
    time_spent_ms: Mapped[int | None]
    active_ms: Mapped[int | None]
