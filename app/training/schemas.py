"""Response models of the rounds API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from app.api import Out, Page


class RoundMetrics(Out):
    win_rate: float | None = Field(default=None, description="Humans' win rate of the new policy over the previous "
                                   "one on the evaluation prompts (ties half a win).")
    win_rate_ci: list[float | None] | None = Field(default=None, description="95% Wilson interval [low, high].")
    battles: int | None = None
    reward_accuracy: float | None = None
    kl: float | None = None
    score_mean: float | None = None
    judgments: int | None = None


class RoundOut(Out):
    id: int
    project_id: int
    number: int
    status: str
    trigger: str | None
    policy_version_id: int | None
    new_policy_version_id: int | None
    reward_version_id: int | None
    dataset_id: int | None
    job_ids: list[int]
    jobs: dict[str, int] = Field(description="{step: job id}")
    prompt_ids: list[int]
    comparison_ids: list[int]
    eval_comparison_ids: list[int]
    started_at: datetime | None
    finished_at: datetime | None
    step_times: dict[str, Any]
    error: str | None
    failed_job_id: int | None
    metrics: RoundMetrics


class RoundList(Page):
    rounds: list[RoundOut] = Field(description="Oldest first.")
    recipe: dict[str, Any] = Field(description="The project's round recipe (GET .../rounds/recipe).")
