"""Response models of the verifiers API (pass rates, verdicts, the verifier's audit)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.api import Out, Page


class VerdictOut(Out):
    id: int
    prompt_id: int
    completion_id: int
    job_id: int | None
    model_version_id: int | None
    model_name: str | None
    passed: bool
    reason: str
    rule: str
    failed_tests: list[Any]
    detail: str
    output_tail: str
    near_tolerance: bool
    audit_status: str | None = Field(description="null, pending, confirmed or wrong")
    audit_note: str | None
    prompt: str | list[dict[str, Any]] | None = None
    reference: Any = None
    tests: Any = None
    prompt_excluded: bool | None = None
    answer: str | None = None


class VerdictList(Page):
    verdicts: list[VerdictOut] = Field(description="Newest first.")


class VerifierReport(Out):
    project_id: int
    verifiable: bool
    prompts: int
    excluded: int
    with_reference: int
    with_tests: int
    versions: list[dict[str, Any]] = Field(description="Per verify job: version, pass@1 / pass@k with 95% intervals.")
    audit: dict[str, Any] = Field(description="The verifier's audited false-positive and false-negative rates.")
    disputed: list[dict[str, Any]]


class AuditSampled(Out):
    sampled: int


class AuditedVerdict(Out):
    id: int
    audit_status: str | None


class PromptVerifierOut(Out):
    id: int
    reference: Any
    tests: Any
    excluded: bool
