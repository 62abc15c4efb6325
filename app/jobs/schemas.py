"""Response models of the jobs API (a job of any kind, its metric rows)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from app.api import Out


class JobOut(Out):
    id: int
    kind: str
    project_id: int | None
    status: str = Field(description="queued, running, succeeded, failed or cancelled")
    progress: float
    message: str | None
    error: str | None
    result: dict[str, Any] = Field(description="The kind's typed result: dataset_id, model_version_id, metrics, ...")
    params: dict[str, Any]
    dataset_id: int | None
    base_model_id: int | None
    reward_model_id: int | None
    attempts: int
    max_attempts: int
    depends_on: list[int] = Field(description="Jobs this one waits for.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None

    @classmethod
    def of(cls, job, depends_on: list[int]) -> JobOut:
        fields = {name: getattr(job, name) for name in cls.model_fields if name != "depends_on"}
        return cls.model_validate(fields | {"result": job.result or {}, "params": job.params or {},
                                            "depends_on": depends_on})  # fmt: skip


class JobMetricOut(Out):
    step: int
    metrics: dict[str, Any] = Field(description="The values logged at this step (loss, reward, ...).")
    at: datetime
