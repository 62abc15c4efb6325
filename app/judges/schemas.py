"""Response models of the judges API (a project's judges and their agreement with the humans, the AI policy, the
review queue of AI labels)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from app.api import Out, Page


class TemplateOut(Out):
    version: int = Field(description="0: the built-in template.")
    body: str


class PolicyOut(Out):
    policy: str = Field(description="off, shadow, prelabel or route")
    judge_id: int | None
    threshold: float
    gate: dict[str, Any] | None = Field(default=None, description="The judge gate: max_flip_rate, min_accuracy, "
                                        "min_sample, and `tripped` (when it last switched the policy to shadow).")
    template: TemplateOut


class JudgeOut(Out):
    id: int
    name: str
    method: str = Field(description="reward, generative, rules or prm (a process reward model)")
    model_version_id: int | None
    params: dict[str, Any]


class JudgeFigures(JudgeOut):
    active: bool
    model_name: str | None
    created_at: datetime
    agreement: list[dict[str, Any]] = Field(description="Per template version: accuracy vs the human majority, "
                                            "Cohen's kappa, Krippendorff's alpha, calibration, position bias, ...")


class JudgesReport(PolicyOut):
    project_id: int
    judges: list[JudgeFigures]


class ReviewOption(Out):
    id: int
    text: str


class AILabel(Out):
    id: int
    comparison_id: int
    prompt: str
    options: list[ReviewOption]
    ai_ranking: list[Any] | None = Field(description="The judge's ranking: tie groups of option ids, best first.")
    confidence: float | None
    counted: bool


class AILabelList(Page):
    verdicts: list[AILabel] = Field(description="Counted by the policy first, least confident first.")


class AILabelReviewed(Out):
    id: int
    reviewed: str | None
