"""Model registry pages: the list, and one version's page (figures, reward-model audit, model card)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from sqlalchemy import select

from app.auth.deps import DbSession, Staff
from app.limits import Id
from app.models import ModelVersion, Project
from app.registry.local_serving import serving_state
from app.registry.service import get_version, list_versions
from app.web import render, render_markdown
from trainer.results import SCORING_MODEL_KINDS

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


CARD_LIMIT = 200_000
"""The most characters of a model card the page shows."""


def model_card_text(version: ModelVersion) -> str | None:
    """The model card (README.md) saved in the version's directory (trainer.card wrote it), cut to CARD_LIMIT."""
    path = Path(version.path) / "README.md"
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read(CARD_LIMIT)
    except OSError:
        return None


@router.get("/models/{version_id:int}")
def model_page(version_id: Id, request: Request, db: DbSession, principal: Staff):
    """One version: lineage, figures, the reward-model audit its job computed (trainer.audit), its model card."""
    version = get_version(db, version_id)
    manifest = version.manifest or {}
    project = db.get(Project, version.project_id) if version.project_id else None
    base = db.get(ModelVersion, version.base_version_id) if version.base_version_id else None
    card = model_card_text(version)
    card = render_markdown(card.split("---", 2)[-1] if card.startswith("---") else card) if card else None
    return render(request, "models/version.html",
                  {"version": version, "project": project, "base": base, "figures": split_figures(version.metrics),
                   "audit": manifest.get("audit"), "scoring_model": version.kind in SCORING_MODEL_KINDS, "card": card,
                   "serving": serving_state(db, version)})  # fmt: skip
