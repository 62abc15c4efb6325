"""Live battles: a rater's conversation with two anonymous endpoint versions, answered side by side, then voted on
(app.battles)."""

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedMixin, IdMixin


class BattleSettingsRow(Base):
    """A project's battle settings (app.battles.settings.BattleSettings, validated there); no row: battle mode off."""

    __tablename__ = "battle_settings"

    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), primary_key=True)
    settings: Mapped[dict] = mapped_column(default=dict)
    updated_at: Mapped[datetime | None]


class Battle(IdMixin, CreatedMixin, Base):
    """One live battle: side A and side B are two endpoint versions, shown to the rater without their names."""

    __tablename__ = "battle"
    __table_args__ = (Index("ix_battle_rater_id_project_id_status", "rater_id", "project_id", "status"),)

    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    rater_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    version_a_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id", ondelete="SET NULL"))
    version_b_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(16), default="open")
    """open (turns being asked and answered) | voted | voided (a side failed: no judgment)"""
    pairing: Mapped[str] = mapped_column(String(16), default="uniform")
    """The pairing policy that chose the two versions."""
    pool_prompt_id: Mapped[int | None] = mapped_column(ForeignKey("prompt.id", ondelete="SET NULL"))
    """The project prompt the first turn was drawn from (None: the rater typed it)."""
    void_reason: Mapped[str | None] = mapped_column(String(500))
    comparison_id: Mapped[int | None] = mapped_column(ForeignKey("comparison.id", ondelete="SET NULL"))
    judgment_id: Mapped[int | None] = mapped_column(ForeignKey("judgment.id", ondelete="SET NULL"))
    finished_at: Mapped[datetime | None]


class BattleTurn(IdMixin, CreatedMixin, Base):
    """One user message of a battle and both sides' answers to it (each side sees its own history)."""

    __tablename__ = "battle_turn"
    __table_args__ = (UniqueConstraint("battle_id", "number"),)

    battle_id: Mapped[int] = mapped_column(ForeignKey("battle.id", ondelete="CASCADE"))
    number: Mapped[int]
    """0 for the first prompt, then 1, 2, ... for the follow-ups."""
    prompt: Mapped[str] = mapped_column(Text)
    answer_a: Mapped[str] = mapped_column(Text, default="")
    answer_b: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="pending")
    """pending (not asked yet) | streaming | answered | failed"""
    error_a: Mapped[str | None] = mapped_column(String(500))
    error_b: Mapped[str | None] = mapped_column(String(500))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    meta: Mapped[dict] = mapped_column("metadata", default=dict)
    """Per side: finish reason, usage, time to first token (ms)."""
