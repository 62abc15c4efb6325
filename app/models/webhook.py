"""Webhook endpoints and their deliveries (an outbox: rows are written in the transaction of the event)."""

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedMixin, IdMixin


class WebhookEndpoint(IdMixin, CreatedMixin, Base):
    """A receiver URL for some events, of one project or of all (project_id NULL)."""

    __tablename__ = "webhook_endpoint"

    project_id: Mapped[int | None] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str] = mapped_column(String(500), default="")
    events: Mapped[list] = mapped_column(default=list)
    """Event types it receives, e.g. ["dataset.ready", "job.succeeded"]; ["*"] is every event."""
    secret: Mapped[str] = mapped_column(String(500))
    """`whsec_<base64>`, encrypted at rest (app.crypto: `enc:v1:...`; read it through
    app.webhooks.service.signing_secret). Shown once on creation."""
    enabled: Mapped[bool] = mapped_column(default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(500))
    consecutive_failures: Mapped[int] = mapped_column(default=0)
    last_batch_at: Mapped[datetime | None]
    """When the last judgment.created batch was cut (at most one a second)."""
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))


class WebhookDelivery(IdMixin, CreatedMixin, Base):
    """One message to one endpoint (one `webhook-id`), retried until it succeeds or gives up.

    A `judgment.created` event is first written as a `batch_item` row (insert-only, so raters never contend
    on a shared row); the worker cuts batches: one message row carrying many items, the items pointing at it.
    """

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        Index("ix_webhook_delivery_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_webhook_delivery_endpoint_id_id", "endpoint_id", "id"),
    )

    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoint.id", ondelete="CASCADE"))
    event_type: Mapped[str] = mapped_column(String(64))
    msg_id: Mapped[str] = mapped_column(String(64), unique=True)
    payload: Mapped[dict] = mapped_column(default=dict)
    """The JSON body: {type, timestamp, data}."""
    batch_item: Mapped[bool] = mapped_column(default=False)
    batch_id: Mapped[int | None] = mapped_column(index=True)
    """For a batch item: the message that carried it."""
    status: Mapped[str] = mapped_column(String(16), default="pending")
    """pending | succeeded | failed (gave up) | batched (an item, sent within its batch)"""
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    lease_until: Mapped[datetime | None]
    """A worker is sending it until then; another worker leaves it alone."""
    last_status_code: Mapped[int | None]
    last_latency_ms: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None]
