"""Verdicts: a verifier's pass or fail on one completion of a verifiable prompt, and its human audit."""

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedMixin, IdMixin
from trainer.rewards.sandbox import REASONS

VERDICT_REASONS: tuple[str, ...] = REASONS
"""passed, wrong_answer, timeout, memory, crash, format, output_limit, sandbox_error."""
AUDIT_STATUSES = ("pending", "right", "wrong")
"""pending: sampled for a human to check; right / wrong: what the auditor found the verdict to be."""


class Verdict(IdMixin, CreatedMixin, Base):
    __tablename__ = "verdict"
    __table_args__ = (Index("ix_verdict_project_id_audit_status", "project_id", "audit_status"),)

    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompt.id", ondelete="CASCADE"), index=True)
    completion_id: Mapped[int] = mapped_column(ForeignKey("completion.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("job.id", ondelete="SET NULL"), index=True)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id", ondelete="SET NULL"))
    model_name: Mapped[str | None] = mapped_column(String(200))
    passed: Mapped[bool]
    reason: Mapped[str] = mapped_column(String(16))
    rule: Mapped[str] = mapped_column(String(32), default="")
    failed_tests: Mapped[list] = mapped_column(default=list)
    detail: Mapped[str] = mapped_column(Text, default="")
    output_tail: Mapped[str] = mapped_column(Text, default="")
    near_tolerance: Mapped[bool] = mapped_column(default=False)
    audit_status: Mapped[str | None] = mapped_column(String(16))
    audited_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    audited_at: Mapped[datetime | None]
    audit_note: Mapped[str | None] = mapped_column(Text)
