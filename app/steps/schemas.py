"""Request and answer bodies of the step-label API (app.steps.router)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from app.api import Out, Page
from app.limits import Input, NonNegativeInt4
from app.steps.labels import MAX_STEPS, MAX_TAG_CHARS, MAX_TAGS

EDIT_MAX_CHARS = 100_000


class StepLabelIn(Input):
    label: Literal["good", "bad", "neutral"] | None = Field(default=None, description="null: not labelled (only "
                                                            "after the first error).")  # fmt: skip
    tags: list[str] = Field(default=[], max_length=MAX_TAGS, description="Failure tags, among the project's.")


class StepLabelsIn(Input):
    labels: list[StepLabelIn] = Field(max_length=MAX_STEPS, description="One entry per step, in order.")
    first_error: NonNegativeInt4 | None = Field(default=None, description="The step marked \"first error here\" "
                                                "(0-based); its label is bad. null: the first step labelled bad, if any.")
    time_spent_ms: NonNegativeInt4 | None = None


class BranchIn(Input):
    step: NonNegativeInt4 = Field(description="The step rewritten (0-based).")
    content: str = Field(default="", max_length=EDIT_MAX_CHARS, description="The rewritten step's text.")
    tool_calls: list[dict] | None = Field(default=None, max_length=64, description="The rewritten step's tool calls "
                                          "[{function: {name, arguments}}]; null or empty: none.")  # fmt: skip


class StepTagsIn(Input):
    tags: list[str] = Field(max_length=MAX_TAGS, description=f"Failure tags, at most {MAX_TAG_CHARS} characters each.")


# ---- answers ---------------------------------------------------------------------------------------------------

class StepOut(Out):
    index: int = Field(description="0-based step number.")
    reasoning: str = Field(description="The assistant's reasoning (empty: none).")
    content: str = Field(description="The assistant's text.")
    tool_calls: list[dict[str, Any]] = Field(description="The action: [{id?, type, function: {name, arguments}}].")
    observations: list[dict[str, Any]] = Field(description="The tool results answering the calls (tool messages).")


class StepJudgmentOut(Out):
    id: int
    completion_id: int
    rater: str | None = Field(description="The rater's username (null: imported).")
    n_steps: int
    labels: list[dict[str, Any]] = Field(description="Per step {label: good|bad|neutral|null, tags: [...]}.")
    first_error: int | None = Field(description="The first error's step (0-based); steps after it are after error.")
    source: str
    voided: bool
    created_at: datetime


class TrajectoryOut(Out):
    completion_id: int
    prompt_id: int
    parent_id: int | None = Field(description="A branch's original trajectory.")
    branch: dict[str, int] | None = Field(description="A branch: {from: original id, step: the rewritten step}.")
    history: list[dict[str, Any]] = Field(description="The prompt's messages (app.imports.messages shape).")
    steps: list[StepOut]
    tags: list[str] = Field(description="The project's failure tags.")
    expires_at: datetime | None = Field(None, description="Next trajectory: when your lease on it ends (its slot "
                                        "then goes back to the queue).")


class TrajectoryLabelsOut(TrajectoryOut):
    step_labels: list[StepJudgmentOut] = Field(description="Staff: every rater's step labels; a rater: their own.")


class StepLabelsPage(Page):
    step_labels: list[StepJudgmentOut]


class StepTagsOut(Out):
    tags: list[str]


class StepAgreementOut(Out):
    krippendorff_alpha: float | None = Field(description="Nominal alpha over steps; null when undefined.")
    units: int = Field(description="Steps labelled by two or more raters.")
    labels: int = Field(description="Counted step labels.")
    level: str
    on: str
    raters: list[dict[str, Any]] = Field(description="Per rater: user_id, username, labels, trajectories, "
                                         "agreement_with_majority, reliability.")
