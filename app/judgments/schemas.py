from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.judgments.edits import EditIn
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
    active_ms: NonNegativeInt4 | None = Field(default=None, description="Active time: the page was visible and the "
                                              "rater interacted; idle gaps over a threshold excluded.")
    edit: EditIn | None = Field(default=None, description="A rewrite of the option ranked best (or a new answer).")


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
    active_ms: int | None = None
    guideline_version: int | None
    source: str
    created_at: datetime
