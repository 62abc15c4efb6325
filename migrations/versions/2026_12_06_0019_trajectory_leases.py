"""trajectory leases: trajectory_lease (an assignment of one trajectory to one rater, for step labels)

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06 13:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.models.base

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = app.models.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "trajectory_lease",
        sa.Column("completion_id", sa.Integer(), nullable=False),
        sa.Column("rater_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("expires_at", UTC, nullable=False),
        sa.Column("finished_at", UTC, nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(["completion_id"], ["completion.id"],
                                name=op.f("fk_trajectory_lease_completion_id_completion"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["project_id"], ["project.id"], name=op.f("fk_trajectory_lease_project_id_project"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["rater_id"], ["user.id"], name=op.f("fk_trajectory_lease_rater_id_user"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trajectory_lease")),
        sa.UniqueConstraint("completion_id", "rater_id", name=op.f("uq_trajectory_lease_completion_id_rater_id")),
    )
    with op.batch_alter_table("trajectory_lease", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_trajectory_lease_completion_id"), ["completion_id"], unique=False)
        batch_op.create_index("ix_trajectory_lease_rater_id_project_id_state", ["rater_id", "project_id", "state"],
                              unique=False)
        batch_op.create_index("ix_trajectory_lease_state_expires_at", ["state", "expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("trajectory_lease", schema=None) as batch_op:
        batch_op.drop_index("ix_trajectory_lease_state_expires_at")
        batch_op.drop_index("ix_trajectory_lease_rater_id_project_id_state")
        batch_op.drop_index(batch_op.f("ix_trajectory_lease_completion_id"))
    op.drop_table("trajectory_lease")
