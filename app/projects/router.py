"""JSON API for projects (their statistics are served by quality, imports by imports)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from pydantic import Field

from app.api import PageAll
from app.auth.deps import Admin, AnyUser, DbSession
from app.limits import Input
from app.projects import service
from app.projects.schemas import Members, ProjectCreate, ProjectOut, ProjectUpdate

router = APIRouter(prefix="/api/v1/projects", tags=["projects"])

@router.post("", status_code=status.HTTP_201_CREATED, response_model=ProjectOut)
def create_project(data: ProjectCreate, db: DbSession, principal: Admin):
    return service.create_project(db, data, principal.user)


@router.get("", response_model=list[ProjectOut])
def list_projects(db: DbSession, principal: AnyUser, response: Response, page: PageAll):
    """The projects you may see, by id."""
    projects = service.visible_projects(db, principal.user)
    page.header(response, len(projects))
    return page.slice(projects)


@router.get("/{project_ref}", response_model=ProjectOut)
def get_project(project_ref: str, db: DbSession, principal: AnyUser):
    return service.get_visible_project(db, project_ref, principal.user)


@router.patch("/{project_ref}", response_model=ProjectOut)
def update_project(project_ref: str, data: ProjectUpdate, db: DbSession, principal: Admin):
    project = service.get_project(db, project_ref)
    return service.update_project(db, project, data, principal.user)


class MembersIn(Input):
    usernames: list[str] = Field(max_length=10_000, description="Every member (replaces the list).")
    members_only: bool | None = Field(default=None, description="Also restrict the project to its members.")


def _members(db, project) -> dict:
    from sqlalchemy import select

    from app.models import ProjectMember, User

    names = db.scalars(select(User.username).join(ProjectMember, ProjectMember.user_id == User.id)
                       .where(ProjectMember.project_id == project.id).order_by(User.username))  # fmt: skip
    return {"project_id": project.id, "members_only": project.members_only, "usernames": list(names)}


@router.get("/{project_ref}/members", response_model=Members)
def get_members(project_ref: str, db: DbSession, principal: Admin):
    return _members(db, service.get_project(db, project_ref))


@router.put("/{project_ref}/members", response_model=Members)
def put_members(project_ref: str, data: MembersIn, db: DbSession, principal: Admin):
    """Replace the members (by username); unknown usernames are refused."""
    from sqlalchemy import select

    from app.errors import Unprocessable
    from app.models import User

    project = service.get_project(db, project_ref)
    found = dict(db.execute(select(User.username, User.id).where(User.username.in_(data.usernames))).all())
    missing = sorted(set(data.usernames) - set(found))
    if missing:
        raise Unprocessable(f"No users {', '.join(missing[:10])}.")
    service.set_members(db, project, list(found.values()), principal.user)
    if data.members_only is not None:
        service.update_project(db, project, ProjectUpdate(members_only=data.members_only), principal.user)
    return _members(db, project)
