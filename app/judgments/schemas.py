from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.limits import Input, NonNegativeInt4, varchar
from app.models import Assignment

ALLOWED_FLAGS = ("unsafe", "wrong", "all_bad")


class JudgmentIn(Input):
    ranking: list[list[int]] = Field(description="Tie groups of option (completion) ids, best first.")
    attributes: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="{attribute: {option_id: score}}"
    )
    rationale: str | None = Field(default=None, max_length=10_000)
    flags: list[str] = []
    time_spent_ms: NonNegativeInt4 | None = None


class SkipIn(Input):
    reason: varchar(Assignment.skip_reason) = ""


class JudgmentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    assignment_id: int | None
    comparison_id: int
    ranking: list[list[int]]
    attributes: dict
    rationale: str | None
    flags: list[str]
    time_spent_ms: int | None
    guideline_version: int | None
    source: str
    created_at: datetime
