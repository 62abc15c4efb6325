"""Small models of the API's answers. Unknown fields are kept (`extra="allow"`), so a newer server's
additions reach the caller; attribute access (`job.status`) and `job.model_dump()` both work.

Each model names a subset of the server's response model (`SERVER_SCHEMAS`: the OpenAPI component it reads) with
the same field names and types; tests/test_api_contract.py checks them against the server's OpenAPI document."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class APIObject(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    def __getitem__(self, key: str) -> Any:  # obj["id"] as well as obj.id
        return getattr(self, key)


class Project(APIObject):
    id: int
    slug: str
    name: str
    mode: str
    overlap: int
    attributes: list[dict] = []
    status: str = "active"


class ImportResult(APIObject):
    format: str
    records: int
    comparisons_created: int = 0
    judgments_created: int = 0
    skipped_existing: int = 0


class Dataset(APIObject):
    id: int
    project_id: int
    status: str
    format: str
    rows: dict[str, int] = {}
    sha256: str | None = None
    files: list[str] = []
    job_id: int | None = None
    error: str | None = None


class Job(APIObject):
    id: int
    kind: str
    status: str
    progress: float = 0.0
    message: str | None = None
    error: str | None = None
    result: dict = {}
    project_id: int | None = None
    dataset_id: int | None = None

    @property
    def done(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled")


class ModelVersion(APIObject):
    id: int
    name: str
    kind: str
    path: str
    job_id: int | None = None
    dataset_id: int | None = None
    metrics: dict = {}


class Webhook(APIObject):
    id: int
    url: str
    events: list[str]
    project_id: int | None = None
    enabled: bool = True
    secret: str | None = None
    """Only in the answer that created the endpoint (or rotated its secret)."""


class TaskOption(APIObject):
    id: int
    label: str
    text: str


class Task(APIObject):
    """The next task of the rating loop: an assignment of one comparison to you."""

    assignment_id: int
    comparison_id: int
    prompt: str | list[dict[str, Any]]
    options: list[TaskOption]
    expires_at: datetime


class Judgment(APIObject):
    id: int
    assignment_id: int | None
    comparison_id: int
    ranking: list[list[int]]
    source: str = "human"


class LeaderboardModel(APIObject):
    name: str
    rating: float | None
    ci_low: float | None
    ci_high: float | None
    battles: int


class Leaderboard(APIObject):
    models: list[LeaderboardModel]
    win_rates: dict[str, dict[str, float | None]] = {}


SERVER_SCHEMAS: dict[type[APIObject], str] = {
    Project: "ProjectOut", ImportResult: "ImportResult", Dataset: "DatasetOut", Job: "JobOut",
    ModelVersion: "ModelVersionOut", Webhook: "WebhookWithSecret", Task: "TaskOut", TaskOption: "TaskOption",
    Judgment: "JudgmentOut", Leaderboard: "Leaderboard", LeaderboardModel: "LeaderboardModel",
}  # fmt: skip
"""Which server response model (OpenAPI component) each client model reads."""
