"""step labels: step_judgment (one rater's labels on a trajectory's steps) and project.step_tags (failure tags)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 12:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import app.models.base

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
UTC = app.models.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "step_judgment",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("completion_id", sa.Integer(), nullable=False),
        sa.Column("rater_id", sa.Integer(), nullable=True),
        sa.Column("n_steps", sa.Integer(), nullable=False),
        sa.Column("labels", JSON, nullable=False),
        sa.Column("first_error", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("time_spent_ms", sa.Integer(), nullable=True),
        sa.Column("guideline_version", sa.Integer(), nullable=True),
        sa.Column("voided_at", UTC, nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["project.id"], name=op.f("fk_step_judgment_project_id_project"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["completion_id"], ["completion.id"],
                                name=op.f("fk_step_judgment_completion_id_completion"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["rater_id"], ["user.id"], name=op.f("fk_step_judgment_rater_id_user"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_step_judgment")),
        sa.UniqueConstraint("completion_id", "rater_id", name=op.f("uq_step_judgment_completion_id_rater_id")),
    )
    with op.batch_alter_table("step_judgment", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_step_judgment_completion_id"), ["completion_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_step_judgment_rater_id"), ["rater_id"], unique=False)
        batch_op.create_index("ix_step_judgment_project_id_created_at", ["project_id", "created_at"], unique=False)
    with op.batch_alter_table("project", schema=None) as batch_op:
        batch_op.add_column(sa.Column("step_tags", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("project", schema=None) as batch_op:
        batch_op.drop_column("step_tags")
    with op.batch_alter_table("step_judgment", schema=None) as batch_op:
        batch_op.drop_index("ix_step_judgment_project_id_created_at")
        batch_op.drop_index(batch_op.f("ix_step_judgment_rater_id"))
        batch_op.drop_index(batch_op.f("ix_step_judgment_completion_id"))
    op.drop_table("step_judgment")
