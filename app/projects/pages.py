"""Project pages: list, create, admin view (settings, queue overview). The import form posts to app.imports.pages."""

from __future__ import annotations

import re

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from sqlalchemy import func, select

from app.auth.deps import Admin, AnyUser, DbSession, Staff
from app.errors import RankforgeError
from app.models import Comparison, Judgment, Role, start_of_day
from app.projects import service
from app.projects.schemas import AttributeScale, ProjectCreate, ProjectUpdate
from app.web import render

router = APIRouter(tags=["pages"])


def parse_attributes(text: str) -> list[AttributeScale]:
    """'helpful 1-7, harmless 1-5' -> scales. Raises ValueError with a readable message."""
    scales = []
    for part in filter(None, (p.strip() for p in re.split(r"[,\n]", text or ""))):
        match = re.fullmatch(r"([a-z][a-z0-9_]*)\s*(?:[: ]\s*(\d+)\s*-\s*(\d+))?", part.lower())
        if not match:
            raise ValueError(f"Cannot read attribute {part!r}: write it like 'helpful 1-7'.")
        name, low, high = match.groups()
        scales.append(AttributeScale(name=name, min=int(low or 1), max=int(high or 7)))
    return scales


def project_counts(db, project_ids: list[int]) -> dict[int, dict]:
    counts = {pid: {"total": 0, "complete": 0} for pid in project_ids}
    complete = (Comparison.n_judgments >= Comparison.required).label("complete")
    rows = db.execute(
        select(Comparison.project_id, complete, func.count())
        .where(Comparison.project_id.in_(project_ids), ~Comparison.is_gold)
        .group_by(Comparison.project_id, complete)
    ).all()
    for pid, is_complete, n in rows:
        counts[pid]["total"] += n
        if is_complete:
            counts[pid]["complete"] += n
    return counts


@router.get("/projects")
def projects_page(request: Request, db: DbSession, principal: AnyUser):
    projects = service.visible_projects(db, principal.user)
    counts = project_counts(db, [p.id for p in projects])
    from app.models import utcnow

    mine = dict(
        db.execute(
            select(Judgment.project_id, func.count())
            .where(Judgment.rater_id == principal.user.id, Judgment.created_at >= start_of_day(utcnow()))
            .group_by(Judgment.project_id)
        ).all()
    )
    return render(request, "projects/list.html", {"projects": projects, "counts": counts, "mine_today": mine})


@router.get("/projects/new")
def new_project_page(request: Request, principal: Admin):
    return render(request, "projects/new.html", {"form": {}})


@router.post("/projects/new")
def create_project_page(request: Request, db: DbSession, principal: Admin, name: str = Form(""),
                        guidelines: str = Form(""), mode: str = Form("pairwise"), overlap: int = Form(1),
                        allow_ties: bool = Form(False), attributes: str = Form(""), gold_rate: float = Form(0.0),
                        description: str = Form("")):  # fmt: skip
    form = {"name": name, "guidelines": guidelines, "mode": mode, "overlap": overlap, "allow_ties": allow_ties,
            "attributes": attributes, "gold_rate": gold_rate, "description": description}  # fmt: skip
    try:
        data = ProjectCreate(name=name, guidelines=guidelines, mode=mode, overlap=overlap, allow_ties=allow_ties,
                             attributes=parse_attributes(attributes), gold_rate=gold_rate, description=description)  # fmt: skip
        project = service.create_project(db, data, principal.user)
    except (ValidationError, ValueError, RankforgeError) as error:
        message = _readable(error)
        return render(request, "projects/new.html", {"form": form, "error": message}, status_code=422)
    return RedirectResponse(f"/projects/{project.id}", status_code=303)


def _readable(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
    if isinstance(error, RankforgeError):
        return str(error.detail)
    return str(error)


def _detail_context(db, project) -> dict:
    return {
        "project": project,
        "guidelines": service.current_guidelines(db, project),
        "overview": service.project_overview(db, project),
    }


@router.get("/projects/{project_ref}")
def project_page(project_ref: str, request: Request, db: DbSession, principal: AnyUser):
    project = service.get_visible_project(db, project_ref, principal.user)
    if principal.user.role == Role.annotator:
        return RedirectResponse(f"/projects/{project.id}/annotate", status_code=303)
    return render(request, "projects/detail.html", _detail_context(db, project))


@router.post("/projects/{project_ref}/settings")
def update_settings(project_ref: str, request: Request, db: DbSession, principal: Admin, name: str = Form(...),
                    guidelines: str = Form(""), overlap: int = Form(1), max_overlap: int = Form(1),
                    allow_ties: bool = Form(False), gold_rate: float = Form(0.0), lease_seconds: int = Form(1200),
                    status: str = Form("active"), members_only: bool = Form(False),
                    daily_cap: str = Form("")):  # fmt: skip
    project = service.get_project(db, project_ref)
    try:
        data = ProjectUpdate(name=name, guidelines=guidelines, overlap=overlap, max_overlap=max_overlap,
                             allow_ties=allow_ties, gold_rate=gold_rate, lease_seconds=lease_seconds, status=status,
                             members_only=members_only, daily_cap=int(daily_cap) if daily_cap.strip() else None)  # fmt: skip
        service.update_project(db, project, data, principal.user)
    except (ValidationError, ValueError) as error:
        context = _detail_context(db, project) | {"error": _readable(error)}
        return render(request, "projects/detail.html", context, status_code=422)
    return RedirectResponse(f"/projects/{project.id}?saved=1", status_code=303)


@router.get("/projects/{project_ref}/overview")
def overview_fragment(project_ref: str, request: Request, db: DbSession, principal: Staff):
    project = service.get_project(db, project_ref)
    return render(request, "projects/_overview.html", {"project": project, "overview": service.project_overview(db, project)})

