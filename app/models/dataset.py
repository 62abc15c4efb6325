from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedMixin, IdMixin


class DatasetSnapshot(IdMixin, CreatedMixin, Base):
    """An immutable, content-hashed export living in the artifact store."""

    __tablename__ = "dataset_snapshot"

    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    format: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="building")
    """building | ready | failed"""
    path: Mapped[str | None] = mapped_column(String(500))
    sha256: Mapped[str | None] = mapped_column(String(64))
    rows_train: Mapped[int] = mapped_column(default=0)
    rows_test: Mapped[int] = mapped_column(default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    files: Mapped[list] = mapped_column(default=list)
    manifest: Mapped[dict] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(String(2000))
    job_id: Mapped[int | None] = mapped_column(index=True)
    """The job that made it (no foreign key: jobs also point here, and a cycle buys nothing)."""
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
