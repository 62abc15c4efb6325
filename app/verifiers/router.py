"""JSON API of verifiable projects: pass rates per version, verdicts, the verifier's audit, fixing prompts.
(`verify` jobs start through `POST /api/v1/jobs` like every kind.)"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import Field

from app.api import Paging, paging
from app.auth.deps import AnyUser, DbSession, Staff
from app.limits import Id, Input
from app.projects.service import get_project
from app.verifiers import service
from app.verifiers.schemas import AuditedVerdict, AuditSampled, PromptVerifierOut, VerdictList, VerifierReport

VerdictPage = Annotated[Paging, paging(100, 1000)]

router = APIRouter(prefix="/api/v1", tags=["verifiers"])


@router.get("/projects/{project_ref}/verifier", response_model=VerifierReport)
def verifier(project_ref: str, db: DbSession, principal: Staff):
    """Verifiable prompts, pass@1 / pass@k with 95% intervals per verify job (model version, round), and the
    verifier's audited false-positive and false-negative rates."""
    return service.project_verifier(db, get_project(db, project_ref))


@router.get("/projects/{project_ref}/verdicts", response_model=VerdictList)
def verdicts(project_ref: str, db: DbSession, principal: Staff, page: VerdictPage, job_id: Id | None = None,
             passed: bool | None = None, audit_status: str | None = None):  # fmt: skip
    """The project's verdicts, newest first, with their prompts and answers."""
    query = service.verdicts_query(get_project(db, project_ref), job_id=job_id, passed=passed,
                                   audit_status=audit_status)  # fmt: skip
    rows, total = page.rows(db, query)
    return {"verdicts": service.verdicts_json(db, rows), **page.fields(total)}


class AuditSampleIn(Input):
    count: int = Field(20, ge=1, le=1000, description="Verdicts to send to the audit queue (weighted sample).")


@router.post("/projects/{project_ref}/verdicts/audit-sample", status_code=201, response_model=AuditSampled)
def audit_sample(project_ref: str, data: AuditSampleIn, db: DbSession, principal: Staff):
    return {"sampled": service.sample_for_audit(db, get_project(db, project_ref), data.count, principal.user)}


@router.get("/projects/{project_ref}/verdicts/audit", response_model=VerdictList)
def audit_queue(project_ref: str, db: DbSession, principal: AnyUser, page: VerdictPage):
    """Verdicts waiting for a human: prompt, answer, reference or tests, and the verdict. An annotator reads a
    members-only project's queue only as its member."""
    project = service.audit_project(db, project_ref, principal.user)
    rows, total = page.rows(db, service.verdicts_query(project, audit_status="pending"))
    return {"verdicts": service.verdicts_json(db, rows), **page.fields(total)}


class AuditIn(Input):
    correct: bool = Field(description="Whether the verdict (pass or fail) is right.")
    note: str = Field("", max_length=2000)


@router.post("/verdicts/{verdict_id}/audit", response_model=AuditedVerdict)
def audit_verdict(verdict_id: Id, data: AuditIn, db: DbSession, principal: AnyUser):
    """The older address of `POST /api/v1/projects/{project}/verdicts/{id}/audit`: same rules, the verdict's own
    project's."""
    project = service.verdict_project(db, verdict_id, principal.user)
    verdict = service.audit_verdict(db, project, verdict_id, data.correct, data.note, principal.user)
    return {"id": verdict.id, "audit_status": verdict.audit_status}


@router.post("/projects/{project_ref}/verdicts/{verdict_id}/audit", response_model=AuditedVerdict)
def audit_project_verdict(project_ref: str, verdict_id: Id, data: AuditIn, db: DbSession, principal: AnyUser):
    """Audit a verdict of the audit sample: was the verifier right? Members only on a members-only project; a
    verdict of another project is not found here; one never sampled is refused (409)."""
    project = service.audit_project(db, project_ref, principal.user)
    verdict = service.audit_verdict(db, project, verdict_id, data.correct, data.note, principal.user)
    return {"id": verdict.id, "audit_status": verdict.audit_status}


class PromptVerifierIn(Input):
    excluded: bool | None = None
    reference: dict | None = None
    tests: dict | None = None


@router.post("/projects/{project_ref}/prompts/{prompt_id}/verifier", response_model=PromptVerifierOut)
def update_prompt(project_ref: str, prompt_id: Id, data: PromptVerifierIn, db: DbSession, principal: Staff):
    """Fix a disputed prompt's reference or tests, or exclude it (verify jobs and GRPO prompts skip it)."""
    prompt = service.update_prompt_verifier(db, get_project(db, project_ref), prompt_id, excluded=data.excluded,
                                            reference=data.reference, tests=data.tests, actor=principal.user)  # fmt: skip
    return {"id": prompt.id, "reference": prompt.reference, "tests": prompt.tests,
            "excluded": service.is_excluded(prompt)}
