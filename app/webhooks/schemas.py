from pydantic import BaseModel, Field


class WebhookCreate(BaseModel):
    url: str = Field(min_length=8, max_length=2000, description="http(s) URL of the receiver")
    events: list[str] = Field(min_length=1, max_length=20, description="Event types, or ['*'] for every event")
    project_id: int | str | None = Field(default=None, description="Project id or slug; none: every project")
    description: str = Field(default="", max_length=500)


class WebhookUpdate(BaseModel):
    url: str | None = Field(default=None, min_length=8, max_length=2000)
    events: list[str] | None = Field(default=None, min_length=1, max_length=20)
    description: str | None = Field(default=None, max_length=500)
    enabled: bool | None = None
