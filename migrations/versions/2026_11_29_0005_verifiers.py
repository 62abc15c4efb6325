"""verifiers: prompts' reference and tests, the verdict table

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 22:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import app.models.base

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
UTC = app.models.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("prompt", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reference", JSON, nullable=True))
        batch_op.add_column(sa.Column("tests", JSON, nullable=True))
    op.create_table(
        "verdict",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("prompt_id", sa.Integer(), nullable=False),
        sa.Column("completion_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("model_name", sa.String(length=200), nullable=True),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("failed_tests", JSON, nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("output_tail", sa.Text(), nullable=False),
        sa.Column("near_tolerance", sa.Boolean(), nullable=False),
        sa.Column("audit_status", sa.String(length=16), nullable=True),
        sa.Column("audited_by_id", sa.Integer(), nullable=True),
        sa.Column("audited_at", UTC, nullable=True),
        sa.Column("audit_note", sa.Text(), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(["audited_by_id"], ["user.id"], name=op.f("fk_verdict_audited_by_id_user"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["completion_id"], ["completion.id"], name=op.f("fk_verdict_completion_id_completion"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"], name=op.f("fk_verdict_job_id_job"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["model_version_id"], ["model_version.id"],
                                name=op.f("fk_verdict_model_version_id_model_version"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["project_id"], ["project.id"], name=op.f("fk_verdict_project_id_project"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["prompt_id"], ["prompt.id"], name=op.f("fk_verdict_prompt_id_prompt"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_verdict")),
    )  # fmt: skip
    op.create_index(op.f("ix_verdict_completion_id"), "verdict", ["completion_id"], unique=False)
    op.create_index(op.f("ix_verdict_job_id"), "verdict", ["job_id"], unique=False)
    op.create_index(op.f("ix_verdict_prompt_id"), "verdict", ["prompt_id"], unique=False)
    op.create_index("ix_verdict_project_id_audit_status", "verdict", ["project_id", "audit_status"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_verdict_project_id_audit_status", table_name="verdict")
    op.drop_index(op.f("ix_verdict_prompt_id"), table_name="verdict")
    op.drop_index(op.f("ix_verdict_job_id"), table_name="verdict")
    op.drop_index(op.f("ix_verdict_completion_id"), table_name="verdict")
    op.drop_table("verdict")
    with op.batch_alter_table("prompt", schema=None) as batch_op:
        batch_op.drop_column("tests")
        batch_op.drop_column("reference")
