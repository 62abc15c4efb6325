"""Partial indexes for exports' question "any chat prompt, any continuation?" (app.datasets.service.
has_multi_message_chats): without them it read every prompt and every completion of the database (about 2 s of wall
and 6 s of CPU on PostgreSQL's parallel workers at ten million pairs).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 08:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As app.models.comparison.CONTINUES_SQL was when this revision was written (migrations do not import the models).
CONTINUES = {"postgresql": "(metadata -> 'messages') IS NOT NULL",
             "sqlite": "json_extract(metadata, '$.messages') IS NOT NULL"}


def upgrade() -> None:
    op.create_index("ix_prompt_chat", "prompt", ["project_id"], unique=False, sqlite_where=sa.text("is_chat"),
                    postgresql_where=sa.text("is_chat"))
    op.create_index("ix_completion_continues", "completion", ["prompt_id"], unique=False,
                    sqlite_where=sa.text(CONTINUES["sqlite"]), postgresql_where=sa.text(CONTINUES["postgresql"]))


def downgrade() -> None:
    op.drop_index("ix_completion_continues", table_name="completion")
    op.drop_index("ix_prompt_chat", table_name="prompt")
