"""rounds: the round table, job dependencies, the project's round recipe

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 22:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import app.models.base

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
UTC = app.models.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "round",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("recipe", JSON, nullable=False),
        sa.Column("trigger", sa.String(length=200), nullable=False),
        sa.Column("prompt_ids", JSON, nullable=False),
        sa.Column("policy_version_id", sa.Integer(), nullable=True),
        sa.Column("new_policy_version_id", sa.Integer(), nullable=True),
        sa.Column("reward_version_id", sa.Integer(), nullable=True),
        sa.Column("dataset_id", sa.Integer(), nullable=True),
        sa.Column("jobs", JSON, nullable=False),
        sa.Column("comparison_ids", JSON, nullable=False),
        sa.Column("eval_comparison_ids", JSON, nullable=False),
        sa.Column("eval_scores", JSON, nullable=False),
        sa.Column("metrics", JSON, nullable=False),
        sa.Column("step_times", JSON, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("failed_job_id", sa.Integer(), nullable=True),
        sa.Column("stage_started_at", UTC, nullable=True),
        sa.Column("started_at", UTC, nullable=True),
        sa.Column("finished_at", UTC, nullable=True),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(["created_by_id"], ["user.id"], name=op.f("fk_round_created_by_id_user"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["dataset_id"], ["dataset_snapshot.id"],
                                name=op.f("fk_round_dataset_id_dataset_snapshot"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["new_policy_version_id"], ["model_version.id"],
                                name=op.f("fk_round_new_policy_version_id_model_version"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["policy_version_id"], ["model_version.id"],
                                name=op.f("fk_round_policy_version_id_model_version"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["project_id"], ["project.id"], name=op.f("fk_round_project_id_project"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["reward_version_id"], ["model_version.id"],
                                name=op.f("fk_round_reward_version_id_model_version"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_round")),
        sa.UniqueConstraint("project_id", "number", name=op.f("uq_round_project_id_number")),
    )  # fmt: skip
    op.create_index(op.f("ix_round_project_id"), "round", ["project_id"], unique=False)
    op.create_table(
        "job_dependency",
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("depends_on_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["depends_on_id"], ["job.id"], name=op.f("fk_job_dependency_depends_on_id_job"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"], name=op.f("fk_job_dependency_job_id_job"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "depends_on_id", name=op.f("pk_job_dependency")),
    )  # fmt: skip
    op.create_index(op.f("ix_job_dependency_depends_on_id"), "job_dependency", ["depends_on_id"], unique=False)
    with op.batch_alter_table("project", schema=None) as batch_op:
        batch_op.add_column(sa.Column("round_recipe", JSON, nullable=False, server_default=sa.text("'{}'")))
    with op.batch_alter_table("project", schema=None) as batch_op:
        batch_op.alter_column("round_recipe", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("project", schema=None) as batch_op:
        batch_op.drop_column("round_recipe")
    op.drop_index(op.f("ix_job_dependency_depends_on_id"), table_name="job_dependency")
    op.drop_table("job_dependency")
    op.drop_index(op.f("ix_round_project_id"), table_name="round")
    op.drop_table("round")
