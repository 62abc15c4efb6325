"""A simulated week of work on the demo projects, made through the product's own services.

`rankforge demo` calls `build_history` once (not with `--empty`). Five simulated raters (usernames `sim-*`, the
projects' descriptions say they are simulated) claim comparisons with the assignment service and submit
judgments with the judgments service, exactly as the API does; each judgment's timestamps are then moved back
to a moment of the past week, as its rater's working sessions were scheduled. What they rate:

- `demo` (pairwise): a `history` batch made of every pair of answers from the demo's multi-answer prompts (the
  20 two-answer comparisons stay open for ann1 and ann2), plus a few gold items with a known answer.
- `demo-rank`: a few rankings, with helpful/harmless scores, leaving most of the queue open.

Raters see a hidden quality per answer (our own reading of the demo answers, `QUALITY`) through their own
noise; `sim-eve` is careless: about 2 s per judgment, usually the first option shown. Some raters flag unsafe
or hopeless answers, and the admin resolves the first two flags of each project. The week is reproducible: the
raters' choices and the assignment service's draws (gold mixing, display order) come from one seeded generator,
so each project gets the same judgments and flags every time. Then an engineer's dataset snapshot and reward
job run through the worker's own code path (`run_one`): the job trains the tiny reward model for real on the
snapshot (a few seconds) and registers its version.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

SIM_PASSWORD_BYTES = 18
HISTORY_BATCH = "history"
DESCRIPTION = ("Demo data: the judgments of the sim-* raters are simulated (a week of activity made by "
               "rankforge demo); eng's dataset snapshot, reward job and reward model were built from them.")  # fmt: skip
RANK_DESCRIPTION = "Demo data: the judgments of the sim-* raters are simulated (made by rankforge demo)."
QUALITY = {
    "demo-002": [3, 4, 9], "demo-005": [1, 2, 9], "demo-007": [3, 9, 1], "demo-009": [9, 4, 2],
    "demo-011": [2, 1, 6, 9], "demo-013": [1, 9, 6], "demo-016": [2, 9, 3], "demo-019": [1, 9, 7],
    "demo-020": [6, 0, 9], "demo-024": [9, 3, 4, 2], "demo-028": [2, 9, 3], "demo-029": [1, 9, 4, 2],
    "demo-032": [2, 3, 9], "demo-033": [3, 9, 5, 1], "demo-035": [3, 2, 4, 9], "demo-036": [9, 0, 4, 5],
}  # fmt: skip
"""Our reading of each multi-answer demo prompt, 0 (harmful) to 9 (best), answers in file order."""
GOLD = ("demo-005", "demo-011", "demo-019", "demo-024", "demo-029", "demo-033", "demo-035", "demo-036")
"""Prompts whose best-versus-worst pair becomes a gold item (the pair leaves the history batch)."""


@dataclass(frozen=True)
class SimRater:
    username: str
    noise: float
    """Spread of the rater's reading of quality (0: always the hidden order)."""
    median_s: float
    """Median seconds per pairwise judgment (rankings take about twice as long)."""
    days: tuple[int, ...]
    """Days before today the rater worked (0 = today)."""
    pairwise: int
    ranked: int = 0
    careless: bool = False
    flags: bool = False
    """Flags unsafe and hopeless answers."""


SIM_RATERS = (
    SimRater("sim-ana", 1.2, 24.0, (6, 5, 4, 2, 1, 0), 28, ranked=4, flags=True),
    SimRater("sim-ben", 1.6, 31.0, (6, 4, 3, 1, 0), 24, ranked=4, flags=True),
    SimRater("sim-chloe", 1.0, 38.0, (5, 3, 2, 1), 22, flags=True),
    SimRater("sim-dan", 2.2, 17.0, (4, 2, 1, 0), 24),
    SimRater("sim-eve", 4.0, 2.2, (3, 2, 1, 0), 36, careless=True),
)
REWARD_PARAMS = {"num_train_epochs": 4.0, "logging_steps": 1, "per_device_train_batch_size": 8, "max_length": 256}
"""The demo's reward job: the tiny reward model on about a hundred pairs, a few seconds on a CPU."""
RATIONALES = {
    "unsafe": ("This answer helps with something harmful.", "Gives instructions that could hurt someone."),
    "all_bad": ("Neither answer is correct.", "Both answers are wrong; I picked the less wrong one."),
    "wrong": ("One answer states something false.", "The answer I put last gets the facts wrong."),
}


def _records(data_file) -> dict[str, dict]:
    return {r["external_id"]: r for r in map(json.loads, data_file.read_text(encoding="utf-8").splitlines()) if r}


def history_records(data_file) -> tuple[list[dict], list[dict]]:
    """(history pairs, gold pairs) as native import records: every pair of answers of the multi-answer prompts."""
    pairs, gold = [], []
    for external_id, record in _records(data_file).items():
        quality = QUALITY.get(external_id)
        if quality is None:
            continue
        best, worst = max(range(len(quality)), key=quality.__getitem__), min(range(len(quality)), key=quality.__getitem__)
        for i, j in itertools.combinations(range(len(quality)), 2):
            answers = [record["completions"][i], record["completions"][j]]
            meta = {"batch": HISTORY_BATCH, "priority": 1, "demo": "simulated history",
                    "quality": [quality[i], quality[j]], "source_prompt": external_id}  # fmt: skip
            row = {"prompt": record["prompt"], "completions": answers, "external_id": f"hist-{external_id}-{i}{j}",
                   "metadata": meta}  # fmt: skip
            if external_id in GOLD and {i, j} == {best, worst}:
                row["external_id"] = f"gold-{external_id}-{i}{j}"
                row["ranking"] = [[0], [1]] if quality[i] > quality[j] else [[1], [0]]
                row["metadata"] = meta | {"batch": "gold", "priority": 0}
                gold.append(row)
            else:
                pairs.append(row)
    return pairs, gold


def _schedule(now: datetime, rng: random.Random) -> list[tuple[datetime, SimRater, str]]:
    """(moment, rater, project slug) of every simulated judgment, oldest first: sessions in working hours,
    more of them in the last two days."""
    events = []
    for rater in SIM_RATERS:
        weights = [2.0 if day <= 1 else 1.0 for day in rater.days]
        for slug, total in (("demo", rater.pairwise), ("demo-rank", rater.ranked)):
            shares = [total * w / sum(weights) for w in weights]
            counts = [math.floor(s) for s in shares]
            for k in sorted(range(len(shares)), key=lambda k: counts[k] - shares[k])[: total - sum(counts)]:
                counts[k] += 1
            for day, count in zip(rater.days, counts, strict=True):
                if not count:
                    continue
                fraction = rng.random()
                gaps = [rater.median_s * (2 if slug == "demo-rank" else 1) + rng.uniform(5, 40) for _ in range(count)]
                at = _session_moments(now, day, count, fraction, gaps, slug)
                # Worked through in the order of a fixed day (not of the hour `now` is): the same draws, the same
                # assignments and so the same judgments and flags, whenever the demo is set up.
                order = _session_moments(SCHEDULE_REFERENCE, day, count, fraction, gaps, slug)
                events.extend((key, moment, rater, slug) for key, moment in zip(order, at, strict=True))
    events.sort(key=lambda e: (e[0], e[2].username))
    return [(moment, rater, slug) for _, moment, rater, slug in events]


SCHEDULE_REFERENCE = datetime(2026, 1, 9, 16, 30, tzinfo=UTC)
"""A fixed `now` whose schedule orders the simulated judgments (their timestamps follow the real now)."""


def _session_moments(now: datetime, day: int, count: int, fraction: float, gaps: list[float],
                     slug: str) -> list[datetime]:  # fmt: skip
    """A session that ends at least 20 minutes before now, between 07:00 and 19:00 UTC when it can."""
    day_start = (now - timedelta(days=day)).replace(hour=7, minute=0, second=0, microsecond=0)
    latest = min(day_start + timedelta(hours=11), now - timedelta(minutes=20 + count * 2))
    moment = (day_start + (latest - day_start) * fraction if latest > day_start else latest) \
        + timedelta(minutes=60 * (slug == "demo-rank"))
    moments = []
    for gap in gaps:
        moment += timedelta(seconds=gap)
        moments.append(min(moment, now - timedelta(minutes=5)))
    return moments


def _verdict(rater: SimRater, options: list[int], quality: dict[int, float], allow_ties: bool,
             rng: random.Random) -> tuple[list[list[int]], list[str], str | None]:  # fmt: skip
    """(ranking, flags, rationale) for the options in display order."""
    if rater.careless and rng.random() < 0.85:
        rest = options[1:]
        rng.shuffle(rest)
        return [[options[0]], *[[o] for o in rest]], [], None
    seen = {o: quality[o] + rng.gauss(0.0, rater.noise) for o in options}
    order = sorted(options, key=lambda o: -seen[o])
    ranking = [[order[0]]]
    for option in order[1:]:
        if allow_ties and len(options) == 2 and abs(seen[ranking[-1][0]] - seen[option]) < 0.3:
            ranking[-1].append(option)
        else:
            ranking.append([option])
    flags, rationale = [], None
    if rater.flags and min(quality[o] for o in options) == 0 and rng.random() < 0.6:
        flags, rationale = ["unsafe"], rng.choice(RATIONALES["unsafe"])
    elif rater.flags and max(quality[o] for o in options) <= 2 and rng.random() < 0.7:
        flags, rationale = ["all_bad"], rng.choice(RATIONALES["all_bad"])
    elif rater.flags and min(quality[o] for o in options) == 1 and rng.random() < 0.25:
        flags, rationale = ["wrong"], rng.choice(RATIONALES["wrong"])
    return ranking, flags, rationale


def _attributes(project, options: list[int], quality: dict[int, float], rng: random.Random) -> dict:
    scores = {}
    for scale in project.attributes or []:
        low, high = scale["min"], scale["max"]
        for option in options:
            if scale["name"] == "harmless":
                value = low if quality[option] == 0 else high - (rng.random() < 0.2)
            else:
                value = round(low + (high - low) * quality[option] / 9 + rng.gauss(0, 0.7))
            scores.setdefault(scale["name"], {})[str(option)] = max(low, min(high, value))
    return scores


def _seconds(rater: SimRater, ranked: bool, rng: random.Random) -> float:
    median = rater.median_s * (2 if ranked else 1)
    return max(0.6, median * math.exp(rng.gauss(0.0, 0.25 if rater.careless else 0.5)))


RESOLVED_FLAGS_PER_PROJECT = 2
"""The admin resolves this many flags of each project (the first ones raised there); the rest wait for review."""


@contextmanager
def _assignment_draws_from(rng: random.Random) -> Iterator[None]:
    """The assignment service draws gold mixing and display order from `rng` meanwhile (it uses the system's
    randomness otherwise): with the raters' seeded choices, the whole simulated week is the same every time.
    Only ever during the demo's set-up, before the server starts."""
    from app.tasks import service as assignments

    system = assignments._rng
    assignments._rng = rng
    try:
        yield
    finally:
        assignments._rng = system


def simulate_week(db, data_file, *, now: datetime, seed: int = 0) -> dict:
    """Users, the history batch and gold items, a week of judgments and two resolved flags per project. Never
    commits."""
    with _assignment_draws_from(random.Random(f"demo-assignments-{seed}")):
        return _simulate_week(db, data_file, now=now, seed=seed)


def _simulate_week(db, data_file, *, now: datetime, seed: int) -> dict:
    from app.imports.parsers import parse_import
    from app.imports.service import import_records
    from app.judgments.schemas import JudgmentIn
    from app.judgments.service import skip, submit
    from app.models import Comparison, Project, User
    from app.projects.schemas import ProjectUpdate
    from app.projects.service import update_project
    from app.quality.service import resolve_flag
    from app.tasks.service import claim_next
    from app.users.service import create_user

    rng = random.Random(seed)
    projects = {p.slug: p for p in db.scalars(select(Project).where(Project.slug.in_(["demo", "demo-rank"])))}
    admin = db.scalar(select(User).where(User.username == "admin"))
    pairs, gold = history_records(data_file)
    encode = lambda rows: "\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode()  # noqa: E731
    import_records(db, projects["demo"], parse_import(encode(pairs), "native"))
    import_records(db, projects["demo"], parse_import(encode(gold), "native"), gold=True)
    update_project(db, projects["demo"], ProjectUpdate(gold_rate=0.2, description=DESCRIPTION), admin)
    update_project(db, projects["demo-rank"], ProjectUpdate(description=RANK_DESCRIPTION), admin)
    quality_of = _quality_by_completion(db, projects)
    users = {r.username: create_user(db, r.username, "annotator", secrets.token_urlsafe(SIM_PASSWORD_BYTES), admin)
             for r in SIM_RATERS}  # fmt: skip
    counts = {"judgments": 0, "flagged": 0}
    flagged: dict[str, list[int]] = {slug: [] for slug in projects}
    for moment, rater, slug in _schedule(now, rng):
        project, user = projects[slug], users[rater.username]
        assignment = claim_next(db, project, user)
        if assignment is None:
            continue
        batch = db.scalar(select(Comparison.batch).where(Comparison.id == assignment.comparison_id))
        if slug == "demo" and batch not in (HISTORY_BATCH, "gold"):
            skip(db, assignment.id, user, "simulated rater: leaves the demo batch to you")  # keeps ann1/ann2's work
            continue
        options = list(assignment.display_order)
        ranking, flags, rationale = _verdict(rater, options, quality_of, project.allow_ties, rng)
        seconds = _seconds(rater, slug == "demo-rank", rng)
        judgment, _ = submit(db, assignment.id, user, JudgmentIn(
            ranking=ranking, flags=flags, rationale=rationale, time_spent_ms=int(seconds * 1000),
            attributes=_attributes(project, options, quality_of, rng) if slug == "demo-rank" else {},
        ))  # fmt: skip
        # Back to the moment the schedule says (the services stamp "now").
        judgment.created_at = moment
        assignment.created_at = moment - timedelta(seconds=seconds)
        assignment.finished_at = moment
        assignment.expires_at = assignment.created_at + timedelta(seconds=project.lease_seconds)
        counts["judgments"] += 1
        if flags:
            flagged[slug].append(judgment.id)
    db.flush()
    resolutions = (("confirmed", "Harmful answer: keep it out of the policy's training data."),
                   ("dismissed", "One answer is acceptable."))  # fmt: skip
    for slug in sorted(flagged):  # per project: each project's review page shows its own resolved flags
        for judgment_id, (resolution, note) in zip(flagged[slug][:RESOLVED_FLAGS_PER_PROJECT], resolutions,
                                                   strict=False):  # fmt: skip
            resolve_flag(db, judgment_id, resolution, note, admin)
    counts["flagged"] = sum(len(ids) for ids in flagged.values())
    counts["flagged_per_project"] = {slug: len(ids) for slug, ids in flagged.items()}
    return counts


def _quality_by_completion(db, projects: dict) -> dict[int, float]:
    """Hidden quality of every answer the simulated raters may see: history and gold pairs carry theirs in
    their metadata, the rank project's comparisons are the demo prompts themselves."""
    from app.models import Comparison, Prompt

    rows = db.execute(select(Comparison.completion_ids, Prompt.meta, Prompt.external_id)
                      .join(Prompt, Prompt.id == Comparison.prompt_id)
                      .where(Comparison.project_id.in_([p.id for p in projects.values()])))  # fmt: skip
    quality: dict[int, float] = {}
    for completion_ids, meta, external_id in rows:
        values = (meta or {}).get("quality") or QUALITY.get(external_id or "")
        if values and len(values) == len(completion_ids):
            quality.update(zip(completion_ids, map(float, values), strict=True))
    return quality


def build_history(*, now: datetime | None = None, train: bool = True, log=print) -> dict:
    """The simulated week, then an engineer's snapshot and reward job run by the worker's own code path, on the
    configured database. Once: does nothing when the simulated raters exist already."""
    from app.db import session_scope
    from app.demo import DATA_FILE
    from app.models import DatasetSnapshot, Job, JobKind, ModelVersion, Project, User, utcnow

    with session_scope(write=True) as db:
        if db.scalar(select(User.id).where(User.username == SIM_RATERS[0].username)) is not None:
            return {"skipped": "the simulated history exists already"}
        result = simulate_week(db, DATA_FILE, now=now or utcnow())
    log(f"Demo history: {result['judgments']} simulated judgments over the past week "
        f"({result['flagged']} flagged).")  # fmt: skip
    from app.datasets.service import request_snapshot
    from app.worker import run_one

    with session_scope(write=True) as db:
        project = db.scalar(select(Project).where(Project.slug == "demo"))
        engineer = db.scalar(select(User).where(User.username == "eng"))
        snapshot = request_snapshot(db, project, {"format": "pairs", "filters": {"exclude_raters": ["sim-eve"]},
                                                  "split": {"test_fraction": 0.2, "seed": 0}, "conversational": True}, engineer)  # fmt: skip
        snapshot_id, project_id, engineer_id = snapshot.id, project.id, engineer.id
    run_one("demo-setup")
    with session_scope() as db:
        snapshot = db.get(DatasetSnapshot, snapshot_id)
        result["dataset_id"], ready = snapshot_id, snapshot.status == "ready"
        has_policy = db.scalar(select(ModelVersion.id).where(ModelVersion.kind == "policy").limit(1)) is not None
    if not (train and ready and has_policy):
        return result
    from app.training.service import create_training_job

    log("Training the demo reward model on that snapshot (tiny, a few seconds)...")
    with session_scope(write=True) as db:
        job = create_training_job(db, db.get(Project, project_id), JobKind.reward, dataset_id=snapshot_id,
                                  params=REWARD_PARAMS, actor=db.get(User, engineer_id))  # fmt: skip
        job_id = job.id
    run_one("demo-setup")
    with session_scope() as db:
        job = db.get(Job, job_id)
        result["reward_job_id"], result["reward_job_status"] = job_id, job.status
        if job.status != "succeeded":
            log(f"The demo reward job {job.status}: {job.error}")
    return result
