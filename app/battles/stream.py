"""One battle turn streamed to the browser as server-sent events while both sides write it.

The web process asks both endpoints at once over HTTP (`astream_chat`, asyncio; no model is loaded here) and
forwards each text piece as it arrives, so the first tokens are on the rater's screen before the last are written.
Events (each `event: NAME` + `data: JSON`):

    start  {"turn"}                       sent first, before any endpoint answers
    delta  {"side": "a"|"b", "text"}      a piece of one side's answer (append it as text: it is never markup)
    done   {"side"}                       that side finished
    error  {"side", "message"}            that side failed (the battle is void)
    busy   {}                             the turn is being streamed to another request (another tab)
    end    {"turn_status", "battle_status"}  the turn is recorded; nothing follows

Each side is bounded by the project's `timeout_seconds` (the whole answer) and `max_tokens`. The database is only
touched before (claim the turn) and after (record it), in worker threads; a browser that goes away mid-answer
cuts the turn off, and a cut-off turn voids its battle like a failed side.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from starlette.concurrency import run_in_threadpool

from app.battles import service
from app.battles.service import StreamPlan
from app.db import session_scope
from app.models import BattleTurn, User
from app.registry.endpoint_client import EndpointFailure, astream_chat

CUT_OFF = "The answer was cut off: the page was closed or the connection dropped."


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _claim(battle_id: int, number: int, user: User) -> StreamPlan | dict:
    with session_scope(write=True) as db:
        claimed = service.claim_turn(db, battle_id, number, user)
        if isinstance(claimed, BattleTurn):
            return {"status": claimed.status, "answer_a": claimed.answer_a, "answer_b": claimed.answer_b,
                    "error_a": claimed.error_a, "error_b": claimed.error_b,
                    "battle_status": service.get_own_battle(db, battle_id, user).status}  # fmt: skip
        return claimed


def _finish(turn_id: int, answers: dict, errors: dict, meta: dict) -> dict:
    with session_scope(write=True) as db:
        turn = service.finish_turn(db, turn_id, answers, errors, meta)
        battle_status = db.get(service.Battle, turn.battle_id).status
        return {"turn_status": turn.status, "battle_status": battle_status,
                "errors": {side: getattr(turn, f"error_{side}") for side in ("a", "b")}}  # fmt: skip


async def _side(plan: StreamPlan, side: str, queue: asyncio.Queue) -> None:
    try:
        async with asyncio.timeout(plan.timeout_seconds):
            async for event in astream_chat(plan.configs[side], plan.histories[side], plan.params[side]):
                await queue.put((side, event))
    except TimeoutError:
        await queue.put((side, {"error": f"No complete answer within {plan.timeout_seconds:g} s (timeout)."}))
    except EndpointFailure as failure:
        await queue.put((side, {"error": f"The model failed: {failure.reason}"}))
    except asyncio.CancelledError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure of one side is that side's error, never a 500
        await queue.put((side, {"error": f"The model failed ({type(error).__name__})."}))


async def turn_events(battle_id: int, number: int, user: User) -> AsyncIterator[str]:
    """The turn's events (see the module). Claiming happens before the first event, so refusals (not the rater's
    battle, no such turn) are raised before the response starts."""
    claimed = await run_in_threadpool(_claim, battle_id, number, user)
    return _replay(number, claimed) if isinstance(claimed, dict) else _stream(number, claimed)


async def _replay(number: int, state: dict) -> AsyncIterator[str]:
    """A turn claimed before: what it has (all of it when recorded), or `busy` while another request streams it."""
    yield sse("start", {"turn": number})
    if state["status"] == "streaming":
        yield sse("busy", {})
    else:
        for side in ("a", "b"):
            if state[f"answer_{side}"]:
                yield sse("delta", {"side": side, "text": state[f"answer_{side}"]})
            if state[f"error_{side}"]:
                yield sse("error", {"side": side, "message": state[f"error_{side}"]})
            else:
                yield sse("done", {"side": side})
    yield sse("end", {"turn_status": state["status"], "battle_status": state["battle_status"]})


async def _stream(number: int, plan: StreamPlan) -> AsyncIterator[str]:
    queue: asyncio.Queue = asyncio.Queue()
    started = time.monotonic()
    texts: dict[str, list[str]] = {"a": [], "b": []}
    errors: dict[str, str] = {}
    meta: dict = {"params": plan.params}
    recorded = False
    tasks: list[asyncio.Task] = []
    try:
        yield sse("start", {"turn": number})
        tasks = [asyncio.create_task(_side(plan, side, queue)) for side in ("a", "b")]
        running = 2
        while running:
            side, event = await queue.get()
            if "delta" in event:
                if not texts[side]:
                    meta[f"first_token_ms_{side}"] = round((time.monotonic() - started) * 1000, 1)
                texts[side].append(event["delta"])
                yield sse("delta", {"side": side, "text": event["delta"]})
            elif event.get("done"):
                running -= 1
                meta[side] = {"finish_reason": event.get("finish_reason"), "usage": event.get("usage"),
                              "ms": round((time.monotonic() - started) * 1000, 1)}  # fmt: skip
                yield sse("done", {"side": side})
            else:
                running -= 1
                errors[side] = event["error"]
                yield sse("error", {"side": side, "message": event["error"]})
        answers = {side: "".join(parts) for side, parts in texts.items()}
        result = await run_in_threadpool(_finish, plan.turn_id, answers, errors, meta)
        recorded = True
        for side, error in result["errors"].items():  # e.g. an empty answer, found when recording
            if error and side not in errors:
                yield sse("error", {"side": side, "message": error})
        yield sse("end", {"turn_status": result["turn_status"], "battle_status": result["battle_status"]})
    finally:
        for task in tasks:
            task.cancel()
        if not recorded:
            # The browser went away (or the server stops): record the cut-off turn now, in this thread (a closing
            # generator cannot wait on another), so the battle is voided rather than left streaming.
            answers = {side: "".join(parts) for side, parts in texts.items()}
            _finish(plan.turn_id, answers, {"a": CUT_OFF, "b": CUT_OFF} | errors, meta)
