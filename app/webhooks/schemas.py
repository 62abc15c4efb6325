from pydantic import Field

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
