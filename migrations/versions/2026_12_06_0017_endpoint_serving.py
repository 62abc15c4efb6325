"""model_endpoint.unavailable and served_by_job_id: a local version served by the worker's `serve` job, and an
endpoint marked unavailable when that job stops

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 12:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model_endpoint", schema=None) as batch_op:
        batch_op.add_column(sa.Column("unavailable", sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column("served_by_job_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_endpoint", schema=None) as batch_op:
        batch_op.drop_column("served_by_job_id")
        batch_op.drop_column("unavailable")
