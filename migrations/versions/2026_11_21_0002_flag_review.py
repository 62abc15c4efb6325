"""flag review: admin resolutions of flagged judgments

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 11:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.models.base  # noqa: F401 (UTCDateTime)

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "flag_review",
        sa.Column("judgment_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("resolution", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("resolved_by_id", sa.Integer(), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["judgment_id"], ["judgment.id"], name=op.f("fk_flag_review_judgment_id_judgment"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["project_id"], ["project.id"], name=op.f("fk_flag_review_project_id_project"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["resolved_by_id"], ["user.id"], name=op.f("fk_flag_review_resolved_by_id_user"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flag_review")),
        sa.UniqueConstraint("judgment_id", name=op.f("uq_flag_review_judgment_id")),
    )  # fmt: skip
    with op.batch_alter_table("flag_review", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_flag_review_project_id"), ["project_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("flag_review", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_flag_review_project_id"))
    op.drop_table("flag_review")
