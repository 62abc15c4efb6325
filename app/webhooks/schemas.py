from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from app.api import Out
from app.limits import Input, varchar
from app.models import WebhookEndpoint


class WebhookCreate(Input):
    url: varchar(WebhookEndpoint.url) = Field(min_length=8, description="http(s) URL of the receiver")
    events: list[str] = Field(min_length=1, max_length=20, description="Event types, or ['*'] for every event")
    project_id: int | str | None = Field(default=None, description="Project id or slug; none: every project")
    description: varchar(WebhookEndpoint.description) = ""


class WebhookUpdate(Input):
    url: varchar(WebhookEndpoint.url) | None = Field(default=None, min_length=8)
    events: list[str] | None = Field(default=None, min_length=1, max_length=20)
    description: varchar(WebhookEndpoint.description) | None = None
    enabled: bool | None = None


class WebhookOut(Out):
    id: int
    project_id: int | None
    url: str
    events: list[str]
    description: str
    enabled: bool
    disabled_reason: str | None
    consecutive_failures: int
    secret_hint: str | None = Field(description="The secret's last characters, to tell secrets apart.")
    created_at: datetime


class WebhookWithSecret(WebhookOut):
    """The answer that created the endpoint or rotated its secret: the only time the secret is shown."""

    secret: str = Field(description="`whsec_...`: the base64 signing key, shown this once.")


class DeliveryOut(Out):
    id: int
    endpoint_id: int
    event_type: str
    msg_id: str
    status: str
    attempts: int
    last_status_code: int | None
    last_latency_ms: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime | None
    payload: dict[str, Any]


class EventTypes(Out):
    events: list[str]
