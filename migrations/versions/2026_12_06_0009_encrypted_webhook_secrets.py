"""webhook_endpoint.secret encrypted at rest (app.crypto): the column widens, existing secrets are encrypted

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 09:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

endpoints = sa.table("webhook_endpoint", sa.column("id", sa.Integer), sa.column("secret", sa.String))


def upgrade() -> None:
    from app.crypto import encrypt_secret, is_encrypted

    with op.batch_alter_table("webhook_endpoint", schema=None) as batch_op:
        batch_op.alter_column("secret", existing_type=sa.String(length=100), type_=sa.String(length=500),
                              existing_nullable=False)  # fmt: skip
    connection = op.get_bind()
    for endpoint_id, secret in connection.execute(sa.select(endpoints.c.id, endpoints.c.secret)).all():
        if not is_encrypted(secret):
            connection.execute(endpoints.update().where(endpoints.c.id == endpoint_id)
                               .values(secret=encrypt_secret(secret)))  # fmt: skip


def downgrade() -> None:
    from app.crypto import decrypt_secret, is_encrypted

    connection = op.get_bind()
    for endpoint_id, secret in connection.execute(sa.select(endpoints.c.id, endpoints.c.secret)).all():
        if is_encrypted(secret):
            connection.execute(endpoints.update().where(endpoints.c.id == endpoint_id)
                               .values(secret=decrypt_secret(secret)))  # fmt: skip
    with op.batch_alter_table("webhook_endpoint", schema=None) as batch_op:
        batch_op.alter_column("secret", existing_type=sa.String(length=500), type_=sa.String(length=100),
                              existing_nullable=False)  # fmt: skip
