"""judges: AI judges per project, their versioned question template, the AI policy, the AI side of AI judgments

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import app.models.base

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
UTC = app.models.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "judge",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("params", JSON, nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(["created_by_id"], ["user.id"], name=op.f("fk_judge_created_by_id_user"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["model_version_id"], ["model_version.id"],
                                name=op.f("fk_judge_model_version_id_model_version"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["project_id"], ["project.id"], name=op.f("fk_judge_project_id_project"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_judge")),
        sa.UniqueConstraint("project_id", "name", name=op.f("uq_judge_project_id_name")),
    )
    op.create_index(op.f("ix_judge_project_id"), "judge", ["project_id"], unique=False)
    op.create_table(
        "judge_template",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(["created_by_id"], ["user.id"], name=op.f("fk_judge_template_created_by_id_user"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["project_id"], ["project.id"], name=op.f("fk_judge_template_project_id_project"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_judge_template")),
        sa.UniqueConstraint("project_id", "version", name=op.f("uq_judge_template_project_id_version")),
    )
    op.create_table(
        "ai_policy",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("policy", sa.String(length=16), nullable=False),
        sa.Column("judge_id", sa.Integer(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("template_version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["judge_id"], ["judge.id"], name=op.f("fk_ai_policy_judge_id_judge"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["project_id"], ["project.id"], name=op.f("fk_ai_policy_project_id_project"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("project_id", name=op.f("pk_ai_policy")),
    )
    op.create_table(
        "ai_verdict",
        sa.Column("judgment_id", sa.Integer(), nullable=False),
        sa.Column("comparison_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("judge_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("template_version", sa.Integer(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("p_first", sa.Float(), nullable=True),
        sa.Column("detail", JSON, nullable=False),
        sa.Column("counted", sa.Boolean(), nullable=False),
        sa.Column("reviewed", sa.String(length=16), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(["comparison_id"], ["comparison.id"],
                                name=op.f("fk_ai_verdict_comparison_id_comparison"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"], name=op.f("fk_ai_verdict_job_id_job"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["judge_id"], ["judge.id"], name=op.f("fk_ai_verdict_judge_id_judge"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["judgment_id"], ["judgment.id"], name=op.f("fk_ai_verdict_judgment_id_judgment"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["model_version_id"], ["model_version.id"],
                                name=op.f("fk_ai_verdict_model_version_id_model_version"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["project_id"], ["project.id"], name=op.f("fk_ai_verdict_project_id_project"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_verdict")),
        sa.UniqueConstraint("comparison_id", "judge_id", "template_version",
                            name=op.f("uq_ai_verdict_comparison_id_judge_id_template_version")),
        sa.UniqueConstraint("judgment_id", name=op.f("uq_ai_verdict_judgment_id")),
    )
    op.create_index(op.f("ix_ai_verdict_judge_id"), "ai_verdict", ["judge_id"], unique=False)
    op.create_index(op.f("ix_ai_verdict_project_id"), "ai_verdict", ["project_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_ai_verdict_project_id"), table_name="ai_verdict")
    op.drop_index(op.f("ix_ai_verdict_judge_id"), table_name="ai_verdict")
    op.drop_table("ai_verdict")
    op.drop_table("ai_policy")
    op.drop_table("judge_template")
    op.drop_index(op.f("ix_judge_project_id"), table_name="judge")
    op.drop_table("judge")
