"""Admin pages: users (create, role, deactivate, reset password), project membership, audit log."""

from __future__ import annotations

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import func, select

from app.auth.deps import Admin, DbSession
from app.errors import RankforgeError, Unprocessable
from app.groups import parse_labels
from app.limits import INT4_MAX, CleanStr, Id, parse_id
from app.models import AuditLog, Project, ProjectMember, Role, User
from app.projects.service import get_project, revoke_nonmember_leases, set_members
from app.users import service
from app.web import render

router = APIRouter(tags=["pages"])
AUDIT_PAGE_SIZE = 50


def _users_context(db) -> dict:
    users = list(db.scalars(select(User).order_by(User.id)))
    memberships: dict[int, list[str]] = {}
    for user_id, slug in db.execute(select(ProjectMember.user_id, Project.slug)
                                    .join(Project, Project.id == ProjectMember.project_id)):  # fmt: skip
        memberships.setdefault(user_id, []).append(slug)
    return {"users": users, "roles": [r.value for r in Role], "memberships": memberships}


@router.get("/admin/users")
def users_page(request: Request, db: DbSession, principal: Admin):
    context = _users_context(db) | {"saved": request.query_params.get("saved"), "form": {}}
    return render(request, "users/list.html", context)


def _done(what: str) -> RedirectResponse:
    return RedirectResponse(f"/admin/users?saved={what}", status_code=303)


def _failed(request: Request, db, error: RankforgeError, form: dict | None = None):
    context = _users_context(db) | {"error": str(error.detail), "form": form or {}}
    return render(request, "users/list.html", context, status_code=error.status_code)


@router.post("/admin/users")
def create_user_page(request: Request, db: DbSession, principal: Admin, username: str = Form(""),
                     role: str = Form("annotator"), password: str = Form("")):  # fmt: skip
    try:
        service.create_user(db, username.strip(), role, password, principal.user)
    except RankforgeError as error:
        return _failed(request, db, error, {"username": username, "role": role})
    return _done("created")


@router.post("/admin/users/{user_id}/role")
def role_page(user_id: Id, request: Request, db: DbSession, principal: Admin, role: str = Form(...)):
    user = service.get_user(db, user_id)
    if user.id == principal.user.id:
        return _failed(request, db, RankforgeError("You cannot change your own role."))
    try:
        service.set_role(db, user, role, principal.user)
    except RankforgeError as error:
        return _failed(request, db, error)
    return _done("role")


@router.post("/admin/users/{user_id}/labels")
def labels_page(user_id: Id, request: Request, db: DbSession, principal: Admin, labels: str = Form("", max_length=2000)):
    try:
        service.set_labels(db, service.get_user(db, user_id), parse_labels(labels), principal.user)
    except RankforgeError as error:
        return _failed(request, db, error)
    return _done("groups")


@router.post("/admin/users/{user_id}/active")
def active_page(user_id: Id, request: Request, db: DbSession, principal: Admin, active: bool = Form(False)):
    try:
        service.set_active(db, service.get_user(db, user_id), active, principal.user)
    except RankforgeError as error:
        return _failed(request, db, error)
    return _done("activated" if active else "deactivated")


@router.post("/admin/users/{user_id}/password")
def password_page(user_id: Id, request: Request, db: DbSession, principal: Admin, password: str = Form("")):
    try:
        service.reset_password(db, service.get_user(db, user_id), password, principal.user)
    except RankforgeError as error:
        return _failed(request, db, error)
    return _done("password")


@router.get("/projects/{project_ref}/members")
def members_page(project_ref: str, request: Request, db: DbSession, principal: Admin):
    project = get_project(db, project_ref)
    members = set(db.scalars(select(ProjectMember.user_id).where(ProjectMember.project_id == project.id)))
    # Everyone who can rate: the members-only rule holds for every role, so admins and engineers can be members.
    annotators = list(db.scalars(select(User).order_by(User.role != Role.annotator, User.username)))
    return render(request, "users/members.html", {"project": project, "annotators": annotators, "members": members,
                                                  "saved": request.query_params.get("saved")})  # fmt: skip


@router.post("/projects/{project_ref}/members")
async def save_members_page(project_ref: str, request: Request, db: DbSession, principal: Admin):
    form = await request.form()
    raw_ids = [str(v) for v in form.getlist("user_id")]
    user_ids = [parse_id(v) for v in raw_ids]
    if None in user_ids:
        raise Unprocessable(f"user_id: {raw_ids[user_ids.index(None)][:20]!r} is not a user id.")
    members_only = form.get("members_only") == "true"
    project = get_project(db, project_ref)
    set_members(db, project, user_ids, principal.user)
    if project.members_only != members_only:
        project.members_only = members_only
        from app.audit import audit

        audit(db, principal.user, "project.members_only", "project", project.id, members_only=members_only)
        db.flush()
        revoke_nonmember_leases(db, project)
    return RedirectResponse(f"/projects/{project.id}/members?saved=1", status_code=303)


@router.get("/admin/audit")
def audit_page(request: Request, db: DbSession, principal: Admin, page: int = Query(1, ge=1, le=INT4_MAX),
               action: CleanStr = ""):  # fmt: skip
    query = select(AuditLog, User.username).outerjoin(User, User.id == AuditLog.actor_id)
    count = select(func.count()).select_from(AuditLog)
    if action:
        query, count = query.where(AuditLog.action == action), count.where(AuditLog.action == action)
    total = db.scalar(count)
    pages = max(1, -(-total // AUDIT_PAGE_SIZE))
    page = min(max(1, page), pages)
    rows = db.execute(query.order_by(AuditLog.id.desc()).offset((page - 1) * AUDIT_PAGE_SIZE).limit(AUDIT_PAGE_SIZE))
    actions = list(db.scalars(select(AuditLog.action).distinct().order_by(AuditLog.action)))
    return render(request, "admin/audit.html", {"rows": rows.all(), "page": page, "pages": pages, "total": total,
                                                "action": action, "actions": actions})  # fmt: skip
