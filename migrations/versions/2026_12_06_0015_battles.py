"""live battles: battle_settings (a project's battle mode), battle and battle_turn

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import app.models.base

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
UTC = app.models.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "battle_settings",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("settings", JSON, nullable=False),
        sa.Column("updated_at", UTC, nullable=True),
        sa.ForeignKeyConstraint(["project_id"], ["project.id"], name=op.f("fk_battle_settings_project_id_project"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("project_id", name=op.f("pk_battle_settings")),
    )
    op.create_table(
        "battle",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("rater_id", sa.Integer(), nullable=False),
        sa.Column("version_a_id", sa.Integer(), nullable=True),
        sa.Column("version_b_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("pairing", sa.String(length=16), nullable=False),
        sa.Column("pool_prompt_id", sa.Integer(), nullable=True),
        sa.Column("void_reason", sa.String(length=500), nullable=True),
        sa.Column("comparison_id", sa.Integer(), nullable=True),
        sa.Column("judgment_id", sa.Integer(), nullable=True),
        sa.Column("finished_at", UTC, nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["project.id"], name=op.f("fk_battle_project_id_project"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["rater_id"], ["user.id"], name=op.f("fk_battle_rater_id_user"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["version_a_id"], ["model_version.id"], name=op.f("fk_battle_version_a_id_model_version"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["version_b_id"], ["model_version.id"], name=op.f("fk_battle_version_b_id_model_version"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["pool_prompt_id"], ["prompt.id"], name=op.f("fk_battle_pool_prompt_id_prompt"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["comparison_id"], ["comparison.id"], name=op.f("fk_battle_comparison_id_comparison"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["judgment_id"], ["judgment.id"], name=op.f("fk_battle_judgment_id_judgment"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_battle")),
    )
    op.create_index("ix_battle_project_id", "battle", ["project_id"])
    op.create_index("ix_battle_rater_id_project_id_status", "battle", ["rater_id", "project_id", "status"])
    op.create_table(
        "battle_turn",
        sa.Column("battle_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("answer_a", sa.Text(), nullable=False),
        sa.Column("answer_b", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error_a", sa.String(length=500), nullable=True),
        sa.Column("error_b", sa.String(length=500), nullable=True),
        sa.Column("started_at", UTC, nullable=True),
        sa.Column("finished_at", UTC, nullable=True),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(["battle_id"], ["battle.id"], name=op.f("fk_battle_turn_battle_id_battle"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_battle_turn")),
        sa.UniqueConstraint("battle_id", "number", name=op.f("uq_battle_turn_battle_id_number")),
    )


def downgrade() -> None:
    op.drop_table("battle_turn")
    op.drop_index("ix_battle_rater_id_project_id_status", table_name="battle")
    op.drop_index("ix_battle_project_id", table_name="battle")
    op.drop_table("battle")
    op.drop_table("battle_settings")
