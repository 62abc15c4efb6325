from datetime import datetime
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from app.api import Out
from app.limits import INT4_MAX, Input, PositiveInt4, varchar
from app.models import Project

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"


class AttributeScale(Input):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    label: str | None = Field(default=None, max_length=200)
    min: int = Field(default=1, ge=-1000, le=1000)
    max: int = Field(default=7, ge=-1000, le=1000)
    weight: float = Field(default=1.0, ge=0.0, le=1000.0, description="This attribute's weight in the scalar a "
                          "multi-objective reward model gives (the heads combined).")

    @field_validator("max")
    @classmethod
    def _max_above_min(cls, value, info):
        if value <= info.data.get("min", 1):
            raise ValueError("max must be greater than min")
        return value


MAX_MINUTES = 10_000_000.0
"""Longest period a setting in minutes may have (about 19 years): beyond it a date computed from it overflows."""


class ScheduleSettings(Input):
    """The retraining schedule (app.training.scheduler): a reward job every N new judgments and/or T minutes."""

    reward_every_judgments: int | None = Field(default=None, ge=1, le=INT4_MAX, description="Retrain the reward model "
                                               "once this many new judgments exist (input also as reward_every_pairs, "
                                               "its former name).", validation_alias=AliasChoices(
                                                   "reward_every_judgments", "reward_every_pairs"))  # fmt: skip
    reward_every_minutes: float | None = Field(default=None, gt=0, le=MAX_MINUTES, allow_inf_nan=False,
                                               description="...or once this many minutes passed (and a judgment is new).")
    reward_params: dict | None = Field(default=None, description="Hyperparameters of the scheduled reward jobs.")


class ProjectCreate(Input):
    name: varchar(Project.name) = Field(min_length=1)
    slug: str | None = Field(default=None, pattern=SLUG_PATTERN)
    description: str = ""
    guidelines: str = ""
    mode: Literal["pairwise", "rank"] = "pairwise"
    overlap: int = Field(default=1, ge=1, le=50)
    max_overlap: int | None = Field(default=None, ge=1, le=50)
    allow_ties: bool = True
    attributes: list[AttributeScale] = []
    gold_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    lease_seconds: int | None = Field(default=None, ge=30, le=7 * 86400)
    daily_cap: PositiveInt4 | None = None
    members_only: bool = False
    allow_new_answers: bool = False
    practice_required: int | None = Field(default=0, ge=0, le=1000, description="Qualification: practice items a "
                                          "rater answers before real work (0: no gate).")
    practice_pass_rate: float | None = Field(default=0.8, ge=0.0, le=1.0)
    pay_unit: Literal["judgment", "hour"] | None = None
    pay_rate: float | None = Field(default=None, ge=0.0, le=1_000_000.0)


class ProjectUpdate(Input):
    name: varchar(Project.name) | None = Field(default=None, min_length=1)
    description: str | None = None
    guidelines: str | None = None
    overlap: int | None = Field(default=None, ge=1, le=50)
    max_overlap: int | None = Field(default=None, ge=1, le=50)
    allow_ties: bool | None = None
    gold_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    lease_seconds: int | None = Field(default=None, ge=30, le=7 * 86400)
    daily_cap: PositiveInt4 | None = None
    members_only: bool | None = None
    status: Literal["active", "paused", "archived"] | None = None
    allow_new_answers: bool | None = None
    practice_required: int | None = Field(default=None, ge=0, le=1000, description="Qualification: practice items a "
                                          "rater answers before real work (0: no gate).")
    practice_pass_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    pay_unit: Literal["judgment", "hour"] | None = None
    pay_rate: float | None = Field(default=None, ge=0.0, le=1_000_000.0)
    schedule: ScheduleSettings | None = None


class ProjectOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    slug: str
    name: str
    description: str
    mode: str
    overlap: int
    max_overlap: int
    allow_ties: bool
    attributes: list[dict]
    gold_rate: float
    lease_seconds: int
    daily_cap: int | None
    members_only: bool
    status: str
    allow_new_answers: bool = False
    practice_required: int = 0
    practice_pass_rate: float = 0.8
    pay_unit: str | None = None
    pay_rate: float | None = None
    guideline_version: int
    schedule: dict
    created_at: datetime


class ImportResult(BaseModel):
    format: str
    records: int
    prompts_created: int
    completions_created: int
    comparisons_created: int
    judgments_created: int
    skipped_existing: int


class Members(Out):
    project_id: int
    members_only: bool = Field(description="Only the members may rate.")
    usernames: list[str]
