"""model endpoints: model versions served behind an OpenAI-compatible API (encrypted key, limits, prices), and
the endpoint judges' answer cache

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import app.models.base

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
UTC = app.models.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "model_endpoint",
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("base_url", sa.String(length=500), nullable=False),
        sa.Column("model", sa.String(length=300), nullable=False),
        sa.Column("api_key_encrypted", sa.String(length=2000), nullable=True),
        sa.Column("api_key_env", sa.String(length=100), nullable=True),
        sa.Column("sampling", JSON, nullable=False),
        sa.Column("max_concurrency", sa.Integer(), nullable=False),
        sa.Column("requests_per_minute", sa.Integer(), nullable=True),
        sa.Column("timeout_seconds", sa.Float(), nullable=False),
        sa.Column("price_input", sa.Float(), nullable=True),
        sa.Column("price_output", sa.Float(), nullable=True),
        sa.Column("json_output", sa.Boolean(), nullable=False),
        sa.Column("checked_at", UTC, nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(["model_version_id"], ["model_version.id"],
                                name=op.f("fk_model_endpoint_model_version_id_model_version"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_endpoint")),
        sa.UniqueConstraint("model_version_id", name=op.f("uq_model_endpoint_model_version_id")),
    )
    op.create_table(
        "judge_answer_cache",
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("question_sha256", sa.String(length=64), nullable=False),
        sa.Column("settings", sa.String(length=64), nullable=False),
        sa.Column("p_first", sa.Float(), nullable=True),
        sa.Column("answer", JSON, nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(["model_version_id"], ["model_version.id"],
                                name=op.f("fk_judge_answer_cache_model_version_id_model_version"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_judge_answer_cache")),
        sa.UniqueConstraint("model_version_id", "question_sha256", "settings",
                            name=op.f("uq_judge_answer_cache_model_version_id_question_sha256_settings")),
    )


def downgrade() -> None:
    op.drop_table("judge_answer_cache")
    op.drop_table("model_endpoint")
