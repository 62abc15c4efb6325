"""Model registry page."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import select

from app.auth.deps import DbSession, Staff
from app.models import Project
from app.registry.service import list_versions
from app.web import render

router = APIRouter(tags=["pages"])


HELD_OUT_PREFIX = "eval/"
"""Metrics measured on the snapshot's test split (reward accuracy, margin...): what the page shows first."""


def split_figures(metrics: dict | None) -> dict[str, list[tuple[str, float]]]:
    """A version's numeric metrics as {held_out: [(name without eval/, value)], training: [(name, value)]}."""
    numbers = [(k, v) for k, v in (metrics or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return {"held_out": [(k[len(HELD_OUT_PREFIX):].replace("_", " "), v) for k, v in numbers if k.startswith(HELD_OUT_PREFIX)],
            "training": [(k, v) for k, v in numbers if not k.startswith(HELD_OUT_PREFIX)]}  # fmt: skip


@router.get("/models")
def models_page(request: Request, db: DbSession, principal: Staff):
    versions = list_versions(db)
    projects = {p.id: p for p in db.scalars(select(Project))}
    return render(request, "models/list.html",
                  {"versions": versions, "projects": projects, "names": {v.id: v.name for v in versions},
                   "figures": {v.id: split_figures(v.metrics) for v in versions}})  # fmt: skip
