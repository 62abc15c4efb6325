from __future__ import annotations

from typing import Literal

from pydantic import Field

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
