"""Model registry page."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import select

from app.auth.deps import DbSession, Staff
from app.models import Project
from app.registry.service import list_versions
from app.web import render

router = APIRouter(tags=["pages"])


@router.get("/models")
def models_page(request: Request, db: DbSession, principal: Staff):
    versions = list_versions(db)
    projects = {p.id: p for p in db.scalars(select(Project))}
    return render(request, "models/list.html",
                  {"versions": versions, "projects": projects, "names": {v.id: v.name for v in versions}})  # fmt: skip
