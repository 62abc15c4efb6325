"""Admin resolutions of flagged judgments (unsafe, wrong, all_bad): the dashboard's review queue."""

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedMixin, IdMixin

REVIEW_RESOLUTIONS = ("confirmed", "dismissed", "excluded")
"""confirmed: the flag is right; dismissed: the flag is wrong; excluded: drop the judgment from exports."""


class FlagReview(IdMixin, CreatedMixin, Base):
    """One admin's resolution of one flagged judgment; a judgment without a row is still open."""

    __tablename__ = "flag_review"

    judgment_id: Mapped[int] = mapped_column(ForeignKey("judgment.id", ondelete="CASCADE"), unique=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    resolution: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text, default="")
    resolved_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
