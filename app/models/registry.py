from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedMixin, IdMixin


class ModelVersion(IdMixin, CreatedMixin, Base):
    """A registered checkpoint (kind policy or reward) with its lineage."""

    __tablename__ = "model_version"

    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(500))
    project_id: Mapped[int | None] = mapped_column(ForeignKey("project.id", ondelete="SET NULL"), index=True)
    base_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id", ondelete="SET NULL"))
    job_id: Mapped[int | None] = mapped_column(index=True)
    """The job that made it (no foreign key: jobs also point here, and a cycle buys nothing)."""
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_snapshot.id", ondelete="SET NULL"))
    dataset_sha256: Mapped[str | None] = mapped_column(String(64))
    metrics: Mapped[dict] = mapped_column(default=dict)
    manifest: Mapped[dict] = mapped_column(default=dict)
