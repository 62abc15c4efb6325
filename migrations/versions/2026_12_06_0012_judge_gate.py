"""ai_policy.gate: the judge gate's limits (max flip rate, min tie-aware accuracy, min sample) and its last trip

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 10:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("ai_policy", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gate", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ai_policy", schema=None) as batch_op:
        batch_op.drop_column("gate")
