"""The battles' JSON API: a project's battle settings (staff), and a rater's battles: start, follow up, stream a
turn (server-sent events, app.battles.stream), vote."""

from __future__ import annotations

from fastapi import APIRouter, Path
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from app.auth.deps import AnyUser, DbSession, Staff
from app.battles import service
from app.battles.settings import BattleSettings, BattleSettingsPatch, get_settings, set_settings
from app.battles.stream import turn_events
from app.limits import Id, Input
from app.projects.service import get_project

router = APIRouter(prefix="/api/v1", tags=["battles"])

SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
"""No proxy may hold the events back (nginx buffers unless told not to)."""


class BattleStart(Input):
    prompt: str | None = Field(default=None, max_length=100_000, description="The first prompt (or draw: true).")
    draw: bool = Field(default=False, description="Draw the prompt from the project's prompt pool.")


class FollowUp(Input):
    prompt: str = Field(max_length=100_000)


class VoteIn(Input):
    verdict: str = Field(description="a | b | tie | bad (both bad): the rating page's keys 1, 2, T, X.")


class VoteOut(BaseModel):
    judgment_id: int
    comparison_id: int
    created: bool
    revealed: dict | None = Field(description="{a, b}: the versions' names, when the project reveals them.")


@router.get("/projects/{project_ref}/battle-settings", response_model=BattleSettings)
def read_settings(project_ref: str, db: DbSession, principal: Staff):
    return get_settings(db, get_project(db, project_ref))


@router.put("/projects/{project_ref}/battle-settings", response_model=BattleSettings)
def write_settings(project_ref: str, body: BattleSettingsPatch, db: DbSession, principal: Staff):
    """Set some or all of the project's battle settings (the others keep their values): `{"enabled": true}` turns
    battle mode on."""
    return set_settings(db, get_project(db, project_ref), body.model_dump(exclude_unset=True), principal.user)


@router.post("/projects/{project_ref}/battles", status_code=201)
def start(project_ref: str, body: BattleStart, db: DbSession, principal: AnyUser) -> dict:
    """A new battle: two anonymous versions, the first turn pending (stream it next)."""
    project, settings = service.battle_project(db, project_ref, principal.user)
    battle = service.start_battle(db, project, settings, principal.user, body.prompt, draw=body.draw)
    return service.battle_state(db, battle, principal.user)


@router.get("/battles/{battle_id}")
def read(battle_id: Id, db: DbSession, principal: AnyUser) -> dict:
    return service.battle_state(db, service.get_own_battle(db, battle_id, principal.user), principal.user)


@router.post("/battles/{battle_id}/turns", status_code=201)
def follow_up(battle_id: Id, body: FollowUp, db: DbSession, principal: AnyUser) -> dict:
    battle = service.get_own_battle(db, battle_id, principal.user)
    _, settings = service.battle_project(db, battle.project_id, principal.user)
    service.add_turn(db, battle_id, settings, principal.user, body.prompt)
    return service.battle_state(db, battle, principal.user)


@router.post("/battles/{battle_id}/turns/{number}/stream", response_class=StreamingResponse,
             responses={200: {"description": "Server-sent events: each side's pieces, then its end or error.",
                              "content": {"text/event-stream": {"schema": {"type": "string"}}}}})  # fmt: skip
async def stream(battle_id: Id, principal: AnyUser, number: int = Path(ge=0, le=1000)):
    """Both sides' answers to the turn as server-sent events (text/event-stream, see app.battles.stream); a turn is
    asked once: a repeated request gets what was recorded."""
    events = await turn_events(battle_id, number, principal.user)
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)


@router.post("/battles/{battle_id}/vote", response_model=VoteOut)
def vote(battle_id: Id, body: VoteIn, db: DbSession, principal: AnyUser):
    """The vote, once: a repeated vote returns the first judgment (created: false)."""
    judgment, created = service.vote(db, battle_id, principal.user, body.verdict)
    state = service.battle_state(db, service.get_own_battle(db, battle_id, principal.user), principal.user)
    return {"judgment_id": judgment.id, "comparison_id": judgment.comparison_id, "created": created,
            "revealed": state["revealed"]}  # fmt: skip
