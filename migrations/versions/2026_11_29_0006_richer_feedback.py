"""richer feedback: edits (completion source/parent/author), practice items and answers, active time, pay

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 22:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import app.models.base

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
UTC = app.models.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("completion", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source", sa.String(length=16), nullable=False, server_default="model"))
        batch_op.add_column(sa.Column("parent_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("author_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("judgment_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("guideline_version", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("rejected_at", UTC, nullable=True))
        batch_op.add_column(sa.Column("rejected_by_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f("fk_completion_parent_id_completion"), "completion", ["parent_id"],
                                    ["id"], ondelete="SET NULL")
        batch_op.create_foreign_key(batch_op.f("fk_completion_author_id_user"), "user", ["author_id"], ["id"],
                                    ondelete="SET NULL")
        batch_op.create_foreign_key(batch_op.f("fk_completion_judgment_id_judgment"), "judgment", ["judgment_id"],
                                    ["id"], ondelete="SET NULL")
        batch_op.create_foreign_key(batch_op.f("fk_completion_rejected_by_id_user"), "user", ["rejected_by_id"],
                                    ["id"], ondelete="SET NULL")
        batch_op.create_index(batch_op.f("ix_completion_parent_id"), ["parent_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_completion_author_id"), ["author_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_completion_judgment_id"), ["judgment_id"], unique=False)
    with op.batch_alter_table("completion", schema=None) as batch_op:
        batch_op.alter_column("source", server_default=None)
    # Plain ADD COLUMN: a batch (table copy) on SQLite would lose the queue's partial expression index.
    op.add_column("comparison", sa.Column("practice", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("comparison", sa.Column("explanation", sa.Text(), nullable=True))
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("comparison", "practice", server_default=None)
    with op.batch_alter_table("judgment", schema=None) as batch_op:
        batch_op.add_column(sa.Column("active_ms", sa.Integer(), nullable=True))
    with op.batch_alter_table("project", schema=None) as batch_op:
        batch_op.add_column(sa.Column("allow_new_answers", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("practice_required", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("practice_pass_rate", sa.Double(), nullable=False, server_default="0.8"))
        batch_op.add_column(sa.Column("pay_unit", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("pay_rate", sa.Double(), nullable=True))
    with op.batch_alter_table("project", schema=None) as batch_op:
        batch_op.alter_column("allow_new_answers", server_default=None)
        batch_op.alter_column("practice_required", server_default=None)
        batch_op.alter_column("practice_pass_rate", server_default=None)
    op.create_table(
        "practice_answer",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("comparison_id", sa.Integer(), nullable=False),
        sa.Column("rater_id", sa.Integer(), nullable=False),
        sa.Column("ranking", JSON, nullable=False),
        sa.Column("score", sa.Double(), nullable=False),
        sa.Column("time_spent_ms", sa.Integer(), nullable=True),
        sa.Column("active_ms", sa.Integer(), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(["comparison_id"], ["comparison.id"],
                                name=op.f("fk_practice_answer_comparison_id_comparison"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["project_id"], ["project.id"], name=op.f("fk_practice_answer_project_id_project"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["rater_id"], ["user.id"], name=op.f("fk_practice_answer_rater_id_user"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_practice_answer")),
        sa.UniqueConstraint("comparison_id", "rater_id", name=op.f("uq_practice_answer_comparison_id_rater_id")),
    )  # fmt: skip
    op.create_index("ix_practice_answer_project_id_rater_id", "practice_answer", ["project_id", "rater_id"],
                    unique=False)  # fmt: skip


def downgrade() -> None:
    op.drop_index("ix_practice_answer_project_id_rater_id", table_name="practice_answer")
    op.drop_table("practice_answer")
    with op.batch_alter_table("project", schema=None) as batch_op:
        for column in ("pay_rate", "pay_unit", "practice_pass_rate", "practice_required", "allow_new_answers"):
            batch_op.drop_column(column)
    with op.batch_alter_table("judgment", schema=None) as batch_op:
        batch_op.drop_column("active_ms")
    op.drop_column("comparison", "explanation")
    op.drop_column("comparison", "practice")
    with op.batch_alter_table("completion", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_completion_judgment_id"))
        batch_op.drop_index(batch_op.f("ix_completion_author_id"))
        batch_op.drop_index(batch_op.f("ix_completion_parent_id"))
        batch_op.drop_constraint(batch_op.f("fk_completion_rejected_by_id_user"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("fk_completion_judgment_id_judgment"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("fk_completion_author_id_user"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("fk_completion_parent_id_completion"), type_="foreignkey")
        for column in ("rejected_by_id", "rejected_at", "guideline_version", "judgment_id", "author_id", "parent_id",
                       "source"):  # fmt: skip
            batch_op.drop_column(column)
