"""battle_tally: the model leaderboard's battles tallied per project, rater, source, model pair and outcome,
maintained as judgments are written or excluded (app.judgments.tallies); backfilled from the judgments

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 13:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "battle_tally",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("rater_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("model_a", sa.String(length=200), nullable=False),
        sa.Column("model_b", sa.String(length=200), nullable=False),
        sa.Column("outcome", sa.SmallInteger(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["project.id"], name=op.f("fk_battle_tally_project_id_project"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["rater_id"], ["user.id"], name=op.f("fk_battle_tally_rater_id_user"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("project_id", "rater_id", "source", "model_a", "model_b", "outcome",
                                name=op.f("pk_battle_tally")),
    )
    op.create_index(op.f("ix_battle_tally_rater_id"), "battle_tally", ["rater_id"], unique=False)
    # The backfill: the tallies of every judgment already written (the same SQL app.judgments.tallies.rebuild runs).
    from app.judgments.tallies import rebuild

    rebuild(op.get_bind())


def downgrade() -> None:
    op.drop_index(op.f("ix_battle_tally_rater_id"), table_name="battle_tally")
    op.drop_table("battle_tally")
