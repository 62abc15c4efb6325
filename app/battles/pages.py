"""The Battle page of a project in battle mode: write (or draw) a prompt, watch two anonymous versions answer side
by side (static/battle.js reads the turn's server-sent events from the API), vote with the rating page's keys,
follow up, see who was who. htmx posts answer with the battle fragment; refusals come back in it."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse
from markupsafe import Markup

from app.auth.deps import AnyUser, DbSession
from app.battles import service
from app.battles.settings import BattleSettings, get_settings
from app.errors import RankforgeError, TooManyRequests
from app.limits import Id
from app.models import Project
from app.tasks.service import project_for_rater
from app.web import clipped_markdown, is_htmx, render

router = APIRouter(tags=["pages"])

VERDICT_LABELS = {"a": "A is better", "b": "B is better", "tie": "Tie", "bad": "Both bad"}


def _context(db, project: Project, settings: BattleSettings, battle, user, *, error=None, flash=None) -> dict:
    state = service.battle_state(db, battle, user) if battle is not None else None
    if state:
        for turn in state["turns"]:
            for side in ("a", "b"):
                text = turn[f"answer_{side}"]
                if not text or turn["status"] == "streaming":
                    turn[f"html_{side}"] = None
                elif text.strip():
                    turn[f"html_{side}"] = clipped_markdown(text)["html"]
                else:  # shown as nothing, a blank answer would look like one still coming
                    turn[f"html_{side}"] = Markup('<p class="muted">(a blank answer: only white space)</p>')
    return {"project": project, "battle": state, "settings": settings, "error": error, "flash": flash,
            "verdict_labels": VERDICT_LABELS}  # fmt: skip


def _respond(request: Request, db, project, settings, battle, user, *, error=None, flash=None, status_code=200):
    name = "battles/_battle.html" if is_htmx(request) else "battles/battle.html"
    return render(request, name, _context(db, project, settings, battle, user, error=error, flash=flash),
                  status_code=status_code)  # fmt: skip


def _refused(request, db, project, settings, battle, user, error: RankforgeError):
    """A refusal shown in the fragment (htmx swaps 400/409/422 only: a rate limit shows as 409 here; the API
    answers 429)."""
    db.rollback()
    status = 409 if isinstance(error, TooManyRequests) else error.status_code
    if status not in (400, 409, 422):
        raise error
    battle = service.get_own_battle(db, battle.id, user) if battle is not None else None
    return _respond(request, db, project, settings, battle, user, error=str(error.detail), status_code=status)


@router.get("/projects/{project_ref}/battle")
def battle_page(project_ref: str, request: Request, db: DbSession, principal: AnyUser):
    project = project_for_rater(db, project_ref, principal.user)
    settings = get_settings(db, project)
    if not settings.enabled:  # the project nav links every project's Battle page: say why there is none here
        return render(request, "battles/off.html", {"project": project})
    battle = service.current_battle(db, project, principal.user)
    return _respond(request, db, project, settings, battle, principal.user)


@router.post("/projects/{project_ref}/battle")
def start_page(project_ref: str, request: Request, db: DbSession, principal: AnyUser,
               prompt: str = Form(""), draw: str = Form("")):  # fmt: skip
    project, settings = service.battle_project(db, project_ref, principal.user)
    try:
        battle = service.start_battle(db, project, settings, principal.user, prompt, draw=bool(draw))
    except RankforgeError as error:
        return _refused(request, db, project, settings, None, principal.user, error)
    if not is_htmx(request):
        return RedirectResponse(f"/projects/{project.slug}/battle", status_code=303)
    return _respond(request, db, project, settings, battle, principal.user)


@router.get("/projects/{project_ref}/battle/{battle_id}")
def battle_fragment(project_ref: str, battle_id: Id, request: Request, db: DbSession, principal: AnyUser):
    project, settings = service.battle_project(db, project_ref, principal.user)
    battle = service.get_own_battle(db, battle_id, principal.user)
    if battle.project_id != project.id:
        raise service.NotFound(f"No battle {battle_id} of yours in this project.")
    return _respond(request, db, project, settings, battle, principal.user)


@router.post("/projects/{project_ref}/battle/{battle_id}/turns")
def follow_up_page(project_ref: str, battle_id: Id, request: Request, db: DbSession, principal: AnyUser,
                   prompt: str = Form("")):  # fmt: skip
    project, settings = service.battle_project(db, project_ref, principal.user)
    battle = service.get_own_battle(db, battle_id, principal.user)
    try:
        service.add_turn(db, battle_id, settings, principal.user, prompt)
    except RankforgeError as error:
        return _refused(request, db, project, settings, battle, principal.user, error)
    return _respond(request, db, project, settings, battle, principal.user)


@router.post("/projects/{project_ref}/battle/{battle_id}/vote")
def vote_page(project_ref: str, battle_id: Id, request: Request, db: DbSession, principal: AnyUser,
              verdict: str = Form("")):  # fmt: skip
    project, settings = service.battle_project(db, project_ref, principal.user)
    battle = service.get_own_battle(db, battle_id, principal.user)
    try:
        _, created = service.vote(db, battle_id, principal.user, verdict)
    except RankforgeError as error:
        return _refused(request, db, project, settings, battle, principal.user, error)
    battle = service.get_own_battle(db, battle_id, principal.user)
    return _respond(request, db, project, settings, battle, principal.user,
                    flash="Vote saved." if created else "Already voted.")  # fmt: skip
