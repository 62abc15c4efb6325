"""Response models of the rating loop's API (the next task, a skip)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from app.api import Out


class TaskOption(Out):
    id: int = Field(description="The completion's id: what a judgment's ranking names.")
    label: str = Field(description="A, B, C, ... in this assignment's display order.")
    text: str


class TaskOut(Out):
    assignment_id: int
    comparison_id: int
    prompt: str | list[dict[str, Any]] = Field(description="Plain text, or the chat's messages ({role, content}).")
    options: list[TaskOption]
    expires_at: datetime


class SkipOut(Out):
    assignment_id: int
    state: str
