"""The Battle page of a project in battle mode: write (or draw) a prompt, watch two anonymous versions answer side
by side (static/battle.js reads the turn's server-sent events from the API), vote with the rating page's keys,
follow up, see who was who. htmx posts answer with the battle fragment; refusals come back in it."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse
from markupsafe import Markup

from app.auth.deps import AnyUser, DbSession, Staff
from app.battles import service
from app.battles.settings import BattleSettings, get_settings, set_settings
from app.errors import RankforgeError, TooManyRequests, Unprocessable
from app.limits import Id
from app.models import Project
from app.projects.service import get_project
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


def _settings_fields(settings: BattleSettings) -> list[dict]:
    """The settings form's fields, from BattleSettings (the one definition): its type picks the input."""
    fields = []
    for name, field in BattleSettings.model_fields.items():
        value = getattr(settings, name)
        choices = getattr(field.annotation, "__args__", None) if name == "pairing" else None
        widget = ("checkbox" if isinstance(value, bool) else "select" if choices else
                  "lines" if isinstance(value, list) else "number")  # fmt: skip
        fields.append({"name": name, "label": name.replace("_", " ").capitalize(), "widget": widget,
                       "value": "\n".join(value) if widget == "lines" else value, "choices": choices or (),
                       "hint": field.description or "", "step": "any" if isinstance(value, float) else "1"})  # fmt: skip
    return fields


def _settings_page(request: Request, db, project: Project, settings: BattleSettings, *, error=None, saved=False,
                   status_code=200):  # fmt: skip
    versions = service.candidates(db, project, BattleSettings())
    return render(request, "battles/settings.html",
                  {"project": project, "fields": _settings_fields(settings), "error": error, "saved": saved,
                   "endpoint_versions": [v.name for v in versions], "enabled": settings.enabled,
                   "flash": "Saved." if saved else None},
                  status_code=status_code)  # fmt: skip


@router.get("/projects/{project_ref}/battle/settings")
def settings_page(project_ref: str, request: Request, db: DbSession, principal: Staff, saved: bool = False):
    """Battle mode's settings (staff): the form of PUT /api/v1/projects/{id}/battle-settings."""
    project = get_project(db, project_ref)
    return _settings_page(request, db, project, get_settings(db, project), saved=saved)


@router.post("/projects/{project_ref}/battle/settings")
async def save_settings_page(project_ref: str, request: Request, db: DbSession, principal: Staff):
    project = get_project(db, project_ref)
    form = await request.form()
    values: dict = {}
    for name, field in BattleSettings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        raw = form.get(name)
        if isinstance(default, bool):  # the form shows every box: an absent one is unticked
            values[name] = raw is not None
        elif isinstance(default, list):
            values[name] = [line for line in str(raw or "").splitlines() if line.strip()]
        elif raw is not None and str(raw).strip():
            values[name] = str(raw).strip()
    try:
        set_settings(db, project, values, principal.user)
    except Unprocessable as error:
        db.rollback()
        submitted = BattleSettings.model_construct(**(get_settings(db, project).model_dump() | values))
        return _settings_page(request, db, project, submitted, error=str(error.detail), status_code=422)
    return RedirectResponse(f"/projects/{project.slug}/battle/settings?saved=1", status_code=303)


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

