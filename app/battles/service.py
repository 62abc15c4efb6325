"""Live battles: start one (the rater's prompt or one drawn from the project's pool, two anonymous endpoint versions
chosen by the pairing policy), add follow-up turns, claim a turn for streaming and record its answers, vote. Never
commits.

A battle's vote becomes ordinary rows, so every reader of judgments takes it as it is: a prompt (the first user
message, external id `battle-<id>`), one completion per side (the last answer as its text, written by the side's
model version; after follow-ups the whole continuation, later user turns included, in its metadata under
CONTINUATION_KEY), a comparison of the two born complete (it is never served in the rating queue), and a judgment
with source `battle`. A battle whose side failed is voided: no rows, no judgment.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from app.battles.settings import BattleSettings, get_settings
from app.db import is_sqlite, write_transaction
from app.errors import Conflict, Forbidden, NotFound, TooManyRequests, Unprocessable
from app.imports.messages import CONTINUATION_KEY
from app.judgments.selections import BATTLE
from app.limits import bad_character, clean_model_output
from app.models import (
    Battle,
    BattleTurn,
    Comparison,
    Completion,
    Judgment,
    ModelEndpoint,
    ModelVersion,
    Project,
    Prompt,
    User,
    utcnow,
)
from app.registry.endpoint_client import EndpointConfig
from app.registry.endpoints import endpoint_config
from app.tasks.service import project_for_rater
from app.webhooks.service import emit_judgment

VERDICTS = ("a", "b", "tie", "bad")
"""A (side A is better), B, tie, both bad (a tie flagged all_bad): the rating page's 1, 2, T and X."""
STALE_AFTER = timedelta(seconds=60)
"""A turn still `streaming` this long past its timeout lost its web process (a restart): the battle is voided."""
ERROR_CHARS = 500


def battle_project(db: Session, ref: str | int, user: User) -> tuple[Project, BattleSettings]:
    """The project, for a rater who may rate it, with its settings; 404 unless it is in battle mode."""
    project = project_for_rater(db, ref, user)
    settings = get_settings(db, project)
    if not settings.enabled:
        raise NotFound(f"Project {project.slug!r} is not in battle mode.")
    return project, settings


def candidates(db: Session, project: Project, settings: BattleSettings) -> list[ModelVersion]:
    """The endpoint versions that may take part: the settings' names, else the project's policy endpoints."""
    query = select(ModelVersion).join(ModelEndpoint, ModelEndpoint.model_version_id == ModelVersion.id)
    if settings.versions:
        query = query.where(ModelVersion.name.in_(settings.versions))
    else:
        query = query.where(ModelVersion.project_id == project.id, ModelVersion.kind == "policy")
    return list(db.scalars(query.order_by(ModelVersion.id)))


def pair_weights(names: list[str], intervals: dict[str, tuple[float, float]]) -> dict[tuple[str, str], float]:
    """The `overlap` policy's weight of each pair: how much of the narrower of the two leaderboard intervals the
    other covers (1: one holds the other; 0: apart), plus a floor so that no pair is never drawn. A version without
    an interval yet (no votes) overlaps everything fully: it is what needs votes most."""
    weights = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if a in intervals and b in intervals:
                (low_a, high_a), (low_b, high_b) = intervals[a], intervals[b]
                shared = max(0.0, min(high_a, high_b) - max(low_a, low_b))
                narrower = max(min(high_a - low_a, high_b - low_b), 1e-9)
                overlap = min(1.0, shared / narrower)
            else:
                overlap = 1.0
            weights[(a, b)] = overlap + 0.05
    return weights


def choose_pair(db: Session, project: Project, settings: BattleSettings,
                rng: random.Random | None = None) -> tuple[ModelVersion, ModelVersion]:  # fmt: skip
    """Two different versions by the project's pairing policy, in random sides."""
    rng = rng or random.SystemRandom()
    versions = candidates(db, project, settings)
    if len(versions) < 2:
        raise Conflict("Battle mode needs two endpoint versions to compare; ask an admin to register them.")
    by_name = {v.name: v for v in versions}
    names = sorted(by_name)
    if settings.pairing == "overlap":
        from app.quality.service import leaderboard

        board = leaderboard(db, project, bootstrap=100, style_control=False)  # ratings only: the tallies
        intervals = {m["name"]: (m["ci_low"], m["ci_high"]) for m in board["models"]
                     if m["ci_low"] is not None and m["ci_high"] is not None}  # fmt: skip
        weights = pair_weights(names, intervals)
        pairs = list(weights)
        a, b = rng.choices(pairs, weights=[weights[p] for p in pairs])[0]
    else:
        a, b = rng.sample(names, 2)
    if rng.random() < 0.5:
        a, b = b, a
    return by_name[a], by_name[b]


def check_prompt(settings: BattleSettings, text: str) -> str:
    """The prompt as sent, or Unprocessable: empty, too long, unstorable, or refused by the project's text rules."""
    text = str(text or "").strip()
    if not text:
        raise Unprocessable("Write a prompt first.")
    if len(text) > settings.max_prompt_chars:
        raise Unprocessable(f"The prompt is {len(text):,} characters long; this project takes at most "
                            f"{settings.max_prompt_chars:,}.")  # fmt: skip
    problem = bad_character(text)
    if problem:
        raise Unprocessable(f"The prompt {problem}.")
    if settings.blocked(text) is not None:
        raise Unprocessable("This prompt is refused by the project's text rules.")
    return text


def _throttle(db: Session, user: User, settings: BattleSettings) -> None:
    """The per-rater rate limit: turns (first prompts and follow-ups) the account sent in the last minute and hour,
    counted in the database (so no header, address or second web process resets it). One account's checks run one
    at a time: a PostgreSQL advisory lock on it; SQLite holds the write lock already."""
    if not is_sqlite(db):
        key = int.from_bytes(hashlib.sha256(f"rankforge-battle:{user.id}".encode()).digest()[:8], "big", signed=True)
        db.execute(select(func.pg_advisory_xact_lock(key)))
    now = utcnow()
    minute, hour = db.execute(
        select(func.count().filter(BattleTurn.created_at >= now - timedelta(minutes=1)), func.count())
        .select_from(BattleTurn).join(Battle, Battle.id == BattleTurn.battle_id)
        .where(Battle.rater_id == user.id, BattleTurn.created_at >= now - timedelta(hours=1))
    ).one()  # fmt: skip
    if minute >= settings.turns_per_minute:
        raise TooManyRequests(f"At most {settings.turns_per_minute} prompts a minute in battles; wait a moment.")
    if hour >= settings.turns_per_hour:
        raise TooManyRequests(f"At most {settings.turns_per_hour} prompts an hour in battles; try again later.")


def _lock_battle(db: Session, battle_id: int, user: User) -> Battle:
    query = select(Battle).where(Battle.id == battle_id).execution_options(populate_existing=True)
    battle = db.scalar(query if is_sqlite(db) else query.with_for_update())
    if battle is None or battle.rater_id != user.id:
        raise NotFound(f"No battle {battle_id} of yours.")
    return battle


def _void(battle: Battle, reason: str) -> None:
    battle.status = "voided"
    battle.void_reason = reason[:ERROR_CHARS]
    battle.finished_at = utcnow()


def draw_prompt(db: Session, project: Project, rng: random.Random | None = None) -> Prompt:
    """A random prompt of the project's pool that is one user message (battles' own prompts are not the pool)."""
    rng = rng or random.SystemRandom()
    pool = (Prompt.project_id == project.id) & or_(Prompt.external_id.is_(None), ~Prompt.external_id.like("battle-%"))
    total = db.scalar(select(func.count()).select_from(Prompt).where(pool)) or 0
    for _ in range(min(total, 20)):
        prompt = db.scalar(select(Prompt).where(pool).order_by(Prompt.id).offset(rng.randrange(total)).limit(1))
        if prompt and len(prompt.messages) == 1 and prompt.messages[0].get("role") == "user":
            return prompt
    raise Conflict("The project has no prompt to draw (a single user message); write one.")


def start_battle(db: Session, project: Project, settings: BattleSettings, user: User, prompt: str | None = None, *,
                 draw: bool = False) -> Battle:  # fmt: skip
    """A new battle with its first turn (pending: the stream asks both sides). The rater's open battle in this
    project, if any, is left: voided."""
    write_transaction(db)
    pool_prompt = None
    if draw:
        pool_prompt = draw_prompt(db, project)
        prompt = pool_prompt.messages[0]["content"]
    text = check_prompt(settings, prompt or "")
    _throttle(db, user, settings)
    version_a, version_b = choose_pair(db, project, settings)
    for old in db.scalars(select(Battle).where(Battle.project_id == project.id, Battle.rater_id == user.id,
                                               Battle.status == "open")):  # fmt: skip
        _void(old, "left for a new battle")
    battle = Battle(project_id=project.id, rater_id=user.id, version_a_id=version_a.id, version_b_id=version_b.id,
                    status="open", pairing=settings.pairing, pool_prompt_id=pool_prompt.id if pool_prompt else None)  # fmt: skip
    db.add(battle)
    db.flush()
    db.add(BattleTurn(battle_id=battle.id, number=0, prompt=text, status="pending", meta={}))
    db.flush()
    return battle


def turns_of(db: Session, battle: Battle) -> list[BattleTurn]:
    return list(db.scalars(select(BattleTurn).where(BattleTurn.battle_id == battle.id).order_by(BattleTurn.number)))


def add_turn(db: Session, battle_id: int, settings: BattleSettings, user: User, prompt: str) -> BattleTurn:
    """A follow-up: both sides answer it, each with its own history."""
    write_transaction(db)
    battle = _lock_battle(db, battle_id, user)
    if battle.status != "open":
        raise Conflict("This battle is over; start a new one.")
    turns = turns_of(db, battle)
    if any(turn.status != "answered" for turn in turns):
        raise Conflict("Wait until both sides have answered.")
    if len(turns) >= settings.max_turns:
        raise Conflict(f"A battle has at most {settings.max_turns} turns here: vote now.")
    text = check_prompt(settings, prompt)
    _throttle(db, user, settings)
    turn = BattleTurn(battle_id=battle.id, number=len(turns), prompt=text, status="pending", meta={})
    db.add(turn)
    db.flush()
    return turn


@dataclass(frozen=True)
class StreamPlan:
    """What the web process needs to stream one turn, read from the database once (no ORM while streaming)."""

    turn_id: int
    battle_id: int
    configs: dict[str, EndpointConfig]
    histories: dict[str, list[dict]]
    params: dict
    timeout_seconds: float


def _history(turns: list[BattleTurn], side: str) -> list[dict]:
    messages = []
    for turn in turns:
        messages.append({"role": "user", "content": turn.prompt})
        if turn.status == "answered":
            messages.append({"role": "assistant", "content": getattr(turn, f"answer_{side}")})
    return messages


def claim_turn(db: Session, battle_id: int, number: int, user: User) -> StreamPlan | BattleTurn:
    """Mark a pending turn as streaming and return how to ask both sides; a turn already claimed (a second tab, a
    repeated request) is returned as it is, and is never asked twice."""
    write_transaction(db)
    battle = _lock_battle(db, battle_id, user)
    turns = turns_of(db, battle)
    turn = next((t for t in turns if t.number == number), None)
    if turn is None:
        raise NotFound(f"No turn {number} in battle {battle_id}.")
    settings = get_settings(db, db.get(Project, battle.project_id))
    if turn.status == "streaming" and turn.started_at and utcnow() - turn.started_at > STALE_AFTER + timedelta(
            seconds=settings.timeout_seconds):  # fmt: skip
        turn.status = "failed"
        _void(battle, "the answer was cut off (the server restarted)")
    if turn.status != "pending" or battle.status != "open":
        return turn
    versions = {"a": db.get(ModelVersion, battle.version_a_id) if battle.version_a_id else None,
                "b": db.get(ModelVersion, battle.version_b_id) if battle.version_b_id else None}  # fmt: skip
    configs = {}
    for side, version in versions.items():
        try:
            if version is None:
                raise Unprocessable("the model version was deleted")
            configs[side] = endpoint_config(db, version)
        except Unprocessable as error:
            turn.status = "failed"
            setattr(turn, f"error_{side}", "This side cannot answer: it is no longer an endpoint.")
            _void(battle, f"side {side.upper()}: {error.detail}")
            return turn
    turn.status = "streaming"
    turn.started_at = utcnow()
    earlier = [t for t in turns if t.number < number]
    histories = {side: _history(earlier, side) + [{"role": "user", "content": turn.prompt}] for side in ("a", "b")}
    params = {}
    for side, config in configs.items():
        limit = config.sampling.get("max_tokens")
        params[side] = {"max_tokens": min(int(limit), settings.max_tokens) if limit else settings.max_tokens}
    return StreamPlan(turn_id=turn.id, battle_id=battle.id, configs=configs, histories=histories, params=params,
                      timeout_seconds=settings.timeout_seconds)  # fmt: skip


def finish_turn(db: Session, turn_id: int, answers: dict[str, str], errors: dict[str, str], meta: dict) -> BattleTurn:
    """Record a streamed turn: answered, or failed (a side's error voids the battle)."""
    write_transaction(db)
    turn = db.get(BattleTurn, turn_id, populate_existing=True)
    battle = db.get(Battle, turn.battle_id, populate_existing=True)
    for side in ("a", "b"):
        setattr(turn, f"answer_{side}", clean_model_output(answers.get(side, "")))
        error = errors.get(side)
        setattr(turn, f"error_{side}", error[:ERROR_CHARS] if error else None)
    for side in ("a", "b"):  # no text at all is a failure too: nothing to compare (blank text is an answer: vote it bad)
        if not errors.get(side) and not answers.get(side, ""):
            setattr(turn, f"error_{side}", "The model answered nothing.")
    turn.meta = clean_model_output(meta)
    turn.finished_at = utcnow()
    failed = [side for side in ("a", "b") if getattr(turn, f"error_{side}")]
    turn.status = "failed" if failed else "answered"
    if failed and battle.status == "open":
        _void(battle, "; ".join(f"side {side.upper()}: {getattr(turn, f'error_{side}')}" for side in failed))
    db.flush()
    return turn


def vote(db: Session, battle_id: int, user: User, verdict: str) -> tuple[Judgment, bool]:
    """The rater's vote as a judgment (source battle) on a new comparison of the two sides. (judgment, created): a
    repeated vote returns the first one."""
    if verdict not in VERDICTS:
        raise Unprocessable(f"Unknown verdict {verdict!r}; use one of {list(VERDICTS)}.")
    write_transaction(db)
    battle = _lock_battle(db, battle_id, user)
    if battle.status == "voted":
        return db.get(Judgment, battle.judgment_id), False
    if battle.status == "voided":
        raise Conflict(f"This battle was voided ({battle.void_reason}); no vote is taken.")
    turns = turns_of(db, battle)
    if not turns or any(turn.status != "answered" for turn in turns):
        raise Conflict("Wait until both sides have answered.")
    project = db.get(Project, battle.project_id)
    if verdict == "tie" and not project.allow_ties:
        raise Unprocessable("This project does not allow ties.")
    versions = {"a": db.get(ModelVersion, battle.version_a_id), "b": db.get(ModelVersion, battle.version_b_id)}
    if None in versions.values():
        raise Conflict("A model version of this battle was deleted; the battle cannot be voted on.")
    prompt = Prompt(project_id=project.id, external_id=f"battle-{battle.id}", is_chat=True, batch="battle",
                    messages=[{"role": "user", "content": turns[0].prompt}], meta={"battle_id": battle.id})  # fmt: skip
    db.add(prompt)
    db.flush()
    completions = {}
    for side, version in versions.items():
        continuation = []
        for turn in turns:
            if turn.number:
                continuation.append({"role": "user", "content": turn.prompt})
            continuation.append({"role": "assistant", "content": getattr(turn, f"answer_{side}")})
        meta = {"battle_id": battle.id, "side": side}
        if len(turns) > 1:
            meta[CONTINUATION_KEY] = continuation
        completions[side] = Completion(prompt_id=prompt.id, text=continuation[-1]["content"], model_name=version.name,
                                       model_version_id=version.id, source="model", meta=meta,
                                       params=dict((turns[0].meta.get("params") or {}).get(side) or {}))  # fmt: skip
        db.add(completions[side])
    db.flush()
    a, b = completions["a"].id, completions["b"].id
    ranking = {"a": [[a], [b]], "b": [[b], [a]]}.get(verdict, [sorted([a, b])])
    now = utcnow()
    comparison = Comparison(project_id=project.id, prompt_id=prompt.id, completion_ids=[a, b], required=1,
                            n_judgments=1, batch="battle", meta={"battle_id": battle.id})  # fmt: skip
    db.add(comparison)
    db.flush()
    top = ranking[0]
    judgment = Judgment(comparison_id=comparison.id, project_id=project.id, rater_id=user.id, ranking=ranking,
                        attributes={}, flags=["all_bad"] if verdict == "bad" else [], source=BATTLE,
                        guideline_version=project.guideline_version, top_completion_id=top[0] if len(top) == 1 else None,
                        chosen_position=[a, b].index(top[0]) if len(top) == 1 else None, created_at=now,
                        time_spent_ms=int((now - battle.created_at).total_seconds() * 1000))  # fmt: skip
    db.add(judgment)
    db.flush()
    battle.status, battle.comparison_id, battle.judgment_id, battle.finished_at = "voted", comparison.id, judgment.id, now
    emit_judgment(db, judgment, comparison)
    return judgment, True


def current_battle(db: Session, project: Project, user: User) -> Battle | None:
    """The rater's newest battle in the project (an ended one shows its outcome and the next battle's form)."""
    return db.scalar(select(Battle).where(Battle.project_id == project.id, Battle.rater_id == user.id)
                     .order_by(Battle.id.desc()).limit(1))  # fmt: skip


def get_own_battle(db: Session, battle_id: int, user: User) -> Battle:
    battle = db.get(Battle, battle_id)
    if battle is None or battle.rater_id != user.id:
        raise NotFound(f"No battle {battle_id} of yours.")
    return battle


def battle_state(db: Session, battle: Battle, user: User) -> dict:
    """The battle as the rater may see it: turns with both answers and errors; the versions' names only after the
    vote, and only where the project reveals them."""
    if battle.rater_id != user.id:
        raise Forbidden("This battle belongs to another rater.")
    settings = get_settings(db, db.get(Project, battle.project_id))
    turns = turns_of(db, battle)
    revealed = None
    if battle.status == "voted" and settings.reveal:
        names = {v.id: v.name for v in db.scalars(select(ModelVersion).where(
            ModelVersion.id.in_([battle.version_a_id, battle.version_b_id])))}  # fmt: skip
        revealed = {"a": names.get(battle.version_a_id), "b": names.get(battle.version_b_id)}
    verdict = None
    if battle.judgment_id:
        judgment = db.get(Judgment, battle.judgment_id)
        comparison = db.get(Comparison, battle.comparison_id) if battle.comparison_id else None
        if judgment and comparison:
            a, b = comparison.completion_ids
            verdict = ("bad" if "all_bad" in (judgment.flags or []) else "a" if judgment.top_completion_id == a
                       else "b" if judgment.top_completion_id == b else "tie")  # fmt: skip
    pending = next((t.number for t in turns if t.status in ("pending", "streaming")), None)
    return {
        "id": battle.id, "project_id": battle.project_id, "status": battle.status, "void_reason": battle.void_reason,
        "turns": [{"number": t.number, "prompt": t.prompt, "status": t.status, "answer_a": t.answer_a,
                   "answer_b": t.answer_b, "error_a": t.error_a, "error_b": t.error_b} for t in turns],
        "pending_turn": pending, "can_vote": battle.status == "open" and bool(turns) and pending is None,
        "can_continue": battle.status == "open" and pending is None and len(turns) < settings.max_turns,
        "verdict": verdict, "revealed": revealed, "judgment_id": battle.judgment_id,
        "comparison_id": battle.comparison_id,
    }  # fmt: skip
