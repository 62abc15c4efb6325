"""JSON API for projects (their statistics are served by quality, imports by imports)."""

from __future__ import annotations

from fastapi import APIRouter, Query, status

from app.auth.deps import Admin, AnyUser, DbSession
from app.limits import INT4_MAX
from app.projects import service
from app.projects.schemas import ProjectCreate, ProjectOut, ProjectUpdate

router = APIRouter(prefix="/api/v1/projects", tags=["projects"])

@router.post("", status_code=status.HTTP_201_CREATED, response_model=ProjectOut)
def create_project(data: ProjectCreate, db: DbSession, principal: Admin):
    return service.create_project(db, data, principal.user)


@router.get("", response_model=list[ProjectOut])
def list_projects(db: DbSession, principal: AnyUser, limit: int | None = Query(None, ge=1, le=1000),
                  offset: int = Query(0, ge=0, le=INT4_MAX)):  # fmt: skip
    """Projects by id; `limit`/`offset` page (no limit: all)."""
    return service.visible_projects(db, principal.user)[offset : offset + limit if limit else None]


@router.get("/{project_ref}", response_model=ProjectOut)
def get_project(project_ref: str, db: DbSession, principal: AnyUser):
    return service.get_visible_project(db, project_ref, principal.user)


@router.patch("/{project_ref}", response_model=ProjectOut)
def update_project(project_ref: str, data: ProjectUpdate, db: DbSession, principal: Admin):
    project = service.get_project(db, project_ref)
    return service.update_project(db, project, data, principal.user)
