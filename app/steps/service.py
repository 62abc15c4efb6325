"""Step labelling: which trajectory a rater labels next, a trajectory's view, submitting labels (once), branching
from a rewritten step, and the reads the stepwise export and the agreement figures make. Never commits."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Text, cast, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from app.audit import audit
from app.db import is_sqlite, write_transaction
from app.errors import Conflict, NotFound, Unprocessable
from app.imports.messages import CONTINUATION_KEY, MessageError, check_message
from app.judgments.selections import HUMAN, counted_steps
from app.models import (
    Completion,
    Project,
    ProjectStatus,
    Prompt,
    StepJudgment,
    TrajectoryLease,
    User,
    utcnow,
)
from app.steps.labels import (
    MAX_STEPS,
    Step,
    StepLabelError,
    check_labels,
    counted_labels,
    project_tags,
    step_messages,
    step_text,
    steps_of,
    trajectory_messages,
)
from app.tasks.service import RATER_LOCK, sweep_due


@dataclass
class Trajectory:
    completion: Completion
    prompt: Prompt
    steps: list[Step]

    @property
    def history(self) -> list[dict]:
        return self.prompt.messages


def _has_continuation():
    """Completions whose metadata holds a continuation (a cheap text test; `steps_of` decides)."""
    return cast(Completion.meta, Text).like(f'%"{CONTINUATION_KEY}"%')


def load_trajectory(db: Session, project: Project, completion_id: int) -> Trajectory:
    """The completion `completion_id` of `project` as a trajectory (404 when it is not one of the project's)."""
    row = db.execute(select(Completion, Prompt).join(Prompt, Prompt.id == Completion.prompt_id)
                     .where(Completion.id == completion_id, Prompt.project_id == project.id)).first()  # fmt: skip
    if row is None or row[0].rejected_at is not None:
        raise NotFound(f"No trajectory {completion_id} in this project.")
    completion, prompt = row
    steps = steps_of(trajectory_messages(completion.text, completion.meta))
    if not steps:
        raise NotFound(f"Completion {completion_id} has no steps.")
    if len(steps) > MAX_STEPS:
        raise Unprocessable(f"Trajectory {completion_id} has {len(steps)} steps; at most {MAX_STEPS} can be labelled.")
    return Trajectory(completion=completion, prompt=prompt, steps=steps)


TRAJECTORY_SWEEP = "trajectory"
"""The sweep key of trajectory leases (app.tasks.service.sweep_due; comparisons' assignments sweep by project id)."""


@dataclass
class TrajectoryClaim:
    trajectory: Trajectory | None
    lease: TrajectoryLease | None = None
    state: str = "assigned"
    """As app.tasks.service.Claim.state: assigned | busy (every free slot is leased to others now; leases come back
    when they lapse) | done (nothing left for this rater, or the project is not active)."""


def _slots(project: Project) -> int:
    return max(1, project.overlap)


def _taken(completion_id, now: datetime):
    """Slots of a trajectory taken now: its counted step judgments plus its live leases (active, unexpired)."""
    judged = (select(func.count(StepJudgment.id))
              .where(StepJudgment.completion_id == completion_id, counted_steps(HUMAN)).scalar_subquery())  # fmt: skip
    leased = (select(func.count(TrajectoryLease.id))
              .where(TrajectoryLease.completion_id == completion_id, TrajectoryLease.state == "active",
                     TrajectoryLease.expires_at > now).scalar_subquery())  # fmt: skip
    return judged + leased


def _had(rater: User):
    """Trajectories this rater labelled or was leased (a rater gets a trajectory once, as with comparisons)."""
    return or_(exists().where(StepJudgment.completion_id == Completion.id, StepJudgment.rater_id == rater.id),
               exists().where(TrajectoryLease.completion_id == Completion.id, TrajectoryLease.rater_id == rater.id))


def _open_for(project: Project, rater: User, now: datetime, *, counting_leases: bool = True):
    taken = _taken(Completion.id, now) if counting_leases else (
        select(func.count(StepJudgment.id))
        .where(StepJudgment.completion_id == Completion.id, counted_steps(HUMAN)).scalar_subquery())  # fmt: skip
    return (select(Completion.id).join(Prompt, Prompt.id == Completion.prompt_id)
            .where(Prompt.project_id == project.id, Completion.rejected_at.is_(None), _has_continuation(),
                   ~_had(rater), taken < _slots(project)))  # fmt: skip


def _lock_trajectory(db: Session, completion_id: int, *, wait: bool) -> bool:
    """PostgreSQL: lock the trajectory's completion row, the mutex of its slots (claims and submits that take a slot
    hold it); False when another transaction holds it and `wait` is False. SQLite: the write lock is held already."""
    if is_sqlite(db):
        return True
    query = select(Completion.id).where(Completion.id == completion_id).with_for_update(skip_locked=not wait)
    return db.scalar(query) is not None


def _has_free_slot(db: Session, project: Project, completion_id: int, now: datetime, *, held: int = 0) -> bool:
    """Whether the trajectory has a slot free, counted by a statement of its own after the row lock was taken (on
    PostgreSQL a new snapshot: it sees every claim and submit that held the lock before). `held`: slots the caller's
    own live lease holds already (given back by its submit)."""
    return db.scalar(select(_taken(completion_id, now))) - held < _slots(project)


def expire_trajectory_leases(db: Session, project_id: int, now: datetime) -> int:
    """This project's lapsed trajectory leases become 'expired' (their slots were free once they lapsed: slots count
    live leases only)."""
    result = db.execute(update(TrajectoryLease)
                        .where(TrajectoryLease.project_id == project_id, TrajectoryLease.state == "active",
                               TrajectoryLease.expires_at <= now)
                        .values(state="expired").execution_options(synchronize_session=False))  # fmt: skip
    return result.rowcount or 0


def live_lease(db: Session, project: Project, rater: User, now: datetime) -> TrajectoryLease | None:
    """The rater's live trajectory lease in this project (at most one: claims resume it first)."""
    return db.scalar(select(TrajectoryLease).where(
        TrajectoryLease.rater_id == rater.id, TrajectoryLease.project_id == project.id,
        TrajectoryLease.state == "active", TrajectoryLease.expires_at > now).limit(1))  # fmt: skip


def claim_trajectory(db: Session, project: Project, rater: User, *, now: datetime | None = None) -> TrajectoryClaim:
    """The assignment contract for trajectories (DESIGN.md), by its mechanisms (app.tasks.service.claim): resume the
    rater's live lease; else lease the first trajectory (prompt priority, then age) that the rater never had and
    whose counted step judgments + live leases < the project's overlap, until now + `lease_seconds`.

    Race-freedom: SQLite runs the claim under the write lock (`write_transaction`); PostgreSQL holds the rater's row
    lock (one claim per rater at a time) and takes the trajectory's completion row `FOR UPDATE SKIP LOCKED`, then
    counts its slots again (a fresh snapshot) before leasing it. Submits that take a slot hold the same row lock, so
    judgments + live leases never exceed the overlap. Rows skipped because they were locked are looked at again,
    waiting (bounded), before the answer is "busy"."""
    now = now or utcnow()
    write_transaction(db)
    postgres = not is_sqlite(db)
    if postgres:
        db.execute(RATER_LOCK, {"rater_id": rater.id})
    lease = live_lease(db, project, rater, now)
    if lease is not None:
        try:
            return TrajectoryClaim(load_trajectory(db, project, lease.completion_id), lease)
        except (NotFound, Unprocessable):  # rejected or changed since: give the slot back
            lease.state, lease.finished_at = "expired", now
    if project.status != ProjectStatus.active:
        return TrajectoryClaim(None, state="done")
    if sweep_due((TRAJECTORY_SWEEP, project.id)):
        expire_trajectory_leases(db, project.id, now)
    query = _open_for(project, rater, now).order_by(Prompt.priority.desc(), Completion.id).limit(50)
    skipped: list[int] = []
    for completion_id in db.scalars(query).all():
        if not _lock_trajectory(db, completion_id, wait=False):
            skipped.append(completion_id)
            continue
        claimed = _lease_if_free(db, project, rater, completion_id, now)
        if claimed is not None:
            return claimed
    for completion_id in skipped:  # PostgreSQL: held by others a moment ago; wait (bounded) and look again
        try:
            with db.begin_nested():
                db.execute(select(func.set_config("lock_timeout", "5s", True)))
                _lock_trajectory(db, completion_id, wait=True)
        except OperationalError:
            continue
        claimed = _lease_if_free(db, project, rater, completion_id, now)
        if claimed is not None:
            return claimed
    expire_trajectory_leases(db, project.id, now)  # always before saying that nothing is left, as claims do
    busy = db.scalar(select(exists(_open_for(project, rater, now, counting_leases=False))))
    return TrajectoryClaim(None, state="busy" if busy else "done")


def _lease_if_free(db: Session, project: Project, rater: User, completion_id: int,
                   now: datetime) -> TrajectoryClaim | None:  # fmt: skip
    if not _has_free_slot(db, project, completion_id, now):
        return None
    try:
        trajectory = load_trajectory(db, project, completion_id)
    except (NotFound, Unprocessable):
        return None
    lease = TrajectoryLease(completion_id=completion_id, rater_id=rater.id, project_id=project.id, state="active",
                            created_at=now, expires_at=now + timedelta(seconds=project.lease_seconds))  # fmt: skip
    db.add(lease)
    db.flush()
    return TrajectoryClaim(trajectory, lease)


def next_trajectory(db: Session, project: Project, rater: User) -> Trajectory | None:
    """The rater's next trajectory, under a lease (`claim_trajectory`); None when none is free for them."""
    return claim_trajectory(db, project, rater).trajectory


def rater_judgment(db: Session, completion_id: int, rater: User) -> StepJudgment | None:
    return db.scalar(select(StepJudgment).where(StepJudgment.completion_id == completion_id,
                                                StepJudgment.rater_id == rater.id))  # fmt: skip


def submit_labels(db: Session, project: Project, rater: User, completion_id: int, labels, first_error,
                  time_spent_ms: int | None = None) -> tuple[StepJudgment, bool]:  # fmt: skip
    """Store `rater`'s labels on the trajectory; (judgment, created). A second submit by the same rater returns the
    first judgment unchanged (created False): a double submit never makes two, and labels are not silently replaced."""
    now = utcnow()
    write_transaction(db)
    trajectory = load_trajectory(db, project, completion_id)
    _lock_trajectory(db, completion_id, wait=True)  # a submit at the same time waits: then it sees the first
    existing = rater_judgment(db, completion_id, rater)
    if existing is not None:
        return existing, False
    try:
        labels, first_error = check_labels(labels, first_error, len(trajectory.steps), project_tags(project.step_tags))
    except StepLabelError as error:
        raise Unprocessable(str(error)) from error
    _take_slot(db, project, rater, completion_id, now)
    judgment = StepJudgment(project_id=project.id, completion_id=completion_id, rater_id=rater.id,
                            n_steps=len(trajectory.steps), labels=labels, first_error=first_error, source=HUMAN,
                            time_spent_ms=time_spent_ms, guideline_version=project.guideline_version)  # fmt: skip
    try:
        with db.begin_nested():  # two submits at once: the constraint keeps one; the other returns it
            db.add(judgment)
            db.flush()
    except IntegrityError:
        existing = rater_judgment(db, completion_id, rater)
        if existing is None:
            raise
        return existing, False
    return judgment, True


def _take_slot(db: Session, project: Project, rater: User, completion_id: int, now: datetime) -> None:
    """Before a rater's labels are stored: the rater's live lease on the trajectory becomes 'submitted' (its slot
    becomes the judgment's); without one (it lapsed, or the trajectory was opened by link: a branch) a free slot is
    needed, counted under the trajectory's row lock (taken by the caller), else Conflict: labels never exceed the
    overlap."""
    lease = db.scalar(select(TrajectoryLease).where(TrajectoryLease.completion_id == completion_id,
                                                    TrajectoryLease.rater_id == rater.id)
                      .execution_options(populate_existing=True))  # fmt: skip
    live = lease is not None and lease.state == "active" and lease.expires_at > now
    if not live and not _has_free_slot(db, project, completion_id, now):
        raise Conflict("This trajectory has all the step labels it needs"
                       + (": your lease on it expired and its slot went to another rater." if lease else "."))
    if lease is not None and lease.state == "active":
        lease.state, lease.finished_at = "submitted", now


def branch(db: Session, project: Project, rater: User, completion_id: int, step: int, content: str,
           tool_calls: list | None) -> Completion:  # fmt: skip
    """A rewritten step starts a branch: a new completion of the same prompt (``source: human_edit``, parent the
    original) whose continuation is the original's messages before step `step`, then the rewritten assistant message
    (its reasoning kept, its content and tool calls replaced) and nothing after it: the rewritten action's results are
    not known. ``meta.branch`` = {"from": original id, "step": step}."""
    trajectory = load_trajectory(db, project, completion_id)
    if not 0 <= step < len(trajectory.steps):
        raise Unprocessable(f"step must be from 0 to {len(trajectory.steps) - 1}")
    original = trajectory.steps[step].message
    rewritten = {"role": "assistant", "content": content}
    if tool_calls:
        rewritten["tool_calls"] = tool_calls
    if original.get("reasoning"):
        rewritten["reasoning"] = original["reasoning"]
    try:
        rewritten = check_message(rewritten, f"step {step + 1}")
    except MessageError as error:
        raise Unprocessable(str(error)) from error
    if not rewritten["content"].strip() and not rewritten.get("tool_calls"):
        raise Unprocessable("The rewritten step is empty: write its text or a tool call.")
    if (rewritten["content"], rewritten.get("tool_calls")) == (original.get("content") or "", original.get("tool_calls")):
        raise Unprocessable("The rewritten step is the same as the step: change it.")
    kept = [message for earlier in trajectory.steps[:step] for message in step_messages(earlier)]
    messages = [*kept, rewritten]
    completion = Completion(prompt_id=trajectory.prompt.id, text=rewritten["content"],
                            model_name=trajectory.completion.model_name, params={},
                            meta={CONTINUATION_KEY: messages, "branch": {"from": completion_id, "step": step}},
                            source="human_edit", parent_id=completion_id, author_id=rater.id,
                            guideline_version=project.guideline_version)  # fmt: skip
    db.add(completion)
    db.flush()
    audit(db, rater, "trajectory.branch", "completion", completion.id)
    return completion


def set_step_tags(db: Session, project: Project, tags: list[str], actor: User | None) -> list[str]:
    """The project's failure tags (stripped, repeats dropped; an empty list: no tags)."""
    from app.steps.labels import MAX_TAG_CHARS, MAX_TAGS

    cleaned = list(dict.fromkeys(str(tag).strip() for tag in tags if str(tag).strip()))
    if len(cleaned) > MAX_TAGS or any(len(tag) > MAX_TAG_CHARS for tag in cleaned):
        raise Unprocessable(f"At most {MAX_TAGS} tags of at most {MAX_TAG_CHARS} characters each.")
    project.step_tags = cleaned
    audit(db, actor, "project.step_tags", "project", project.id)
    return cleaned


def void(db: Session, project: Project, judgment_id: int, actor: User | None) -> StepJudgment:
    judgment = db.get(StepJudgment, judgment_id)
    if judgment is None or judgment.project_id != project.id:
        raise NotFound(f"No step judgment {judgment_id} in this project.")
    if judgment.voided_at is not None:
        raise Conflict("Already voided.")
    from app.models import utcnow

    judgment.voided_at = utcnow()
    audit(db, actor, "step_judgment.void", "step_judgment", judgment.id)
    return judgment


def _judgments_query(project: Project, completion_id: int | None, rater: User | None):
    query = (select(StepJudgment.id).where(StepJudgment.project_id == project.id).order_by(StepJudgment.id))
    if completion_id is not None:
        query = query.where(StepJudgment.completion_id == completion_id)
    if rater is not None:
        query = query.where(StepJudgment.rater_id == rater.id)
    return query


def _with_usernames(db: Session, ids: list[int]) -> list[dict]:
    if not ids:
        return []
    rows = db.execute(select(StepJudgment, User.username).outerjoin(User, User.id == StepJudgment.rater_id)
                      .where(StepJudgment.id.in_(ids)).order_by(StepJudgment.id))  # fmt: skip
    return [judgment_json(judgment, username) for judgment, username in rows]


def list_judgments(db: Session, project: Project, *, completion_id: int | None = None,
                   rater: User | None = None, limit: int = 1000) -> list[dict]:  # fmt: skip
    """Step judgments, oldest first (of one trajectory, of one rater)."""
    return _with_usernames(db, list(db.scalars(_judgments_query(project, completion_id, rater).limit(limit))))


def page_judgments(db: Session, project: Project, page, *, completion_id: int | None = None) -> tuple[list[dict], int]:
    """One page (app.api.Paging) of the project's step judgments, and their total."""
    ids, total = page.rows(db, _judgments_query(project, completion_id, None))
    return _with_usernames(db, ids), total


def judgment_json(judgment: StepJudgment, username: str | None = None) -> dict:
    return {"id": judgment.id, "completion_id": judgment.completion_id, "rater": username, "n_steps": judgment.n_steps,
            "labels": judgment.labels, "first_error": judgment.first_error, "source": judgment.source,
            "voided": judgment.voided_at is not None, "created_at": judgment.created_at}  # fmt: skip


def trajectory_json(trajectory: Trajectory) -> dict:
    c = trajectory.completion
    return {"completion_id": c.id, "prompt_id": trajectory.prompt.id, "parent_id": c.parent_id,
            "branch": (c.meta or {}).get("branch"), "history": trajectory.history,
            "steps": [{"index": s.index, "reasoning": s.reasoning, "content": s.content, "tool_calls": s.tool_calls,
                       "observations": s.observations} for s in trajectory.steps]}  # fmt: skip


# ---- reads for figures and exports -----------------------------------------------------------------------------


def counted_step_labels(db: Session, project: Project) -> Iterator[tuple[int, int, int, str]]:
    """(completion id, step index, rater id, label) of every counted label of counted human step judgments (steps up
    to each rater's first error), for step alpha and reliability."""
    query = (select(StepJudgment.completion_id, StepJudgment.rater_id, StepJudgment.labels, StepJudgment.first_error)
             .where(counted_steps(HUMAN, project_id=project.id), StepJudgment.rater_id.is_not(None))
             .order_by(StepJudgment.id))  # fmt: skip
    for completion_id, rater_id, labels, first_error in db.execute(query):
        for index, label in enumerate(counted_labels(labels, first_error)):
            if label is not None:
                yield completion_id, index, rater_id, label


@dataclass
class StepExportFilters:
    sources: tuple[str, ...] = (HUMAN,)
    date_from: datetime | None = None
    date_to: datetime | None = None
    include_rater_ids: list[int] | None = None
    exclude_rater_ids: tuple[int, ...] = ()
    exclude_prompt_ids: tuple[int, ...] = ()


def iter_labelled(db: Session, project: Project, filters: StepExportFilters) -> Iterator[tuple[Trajectory, list]]:
    """Each labelled trajectory (completion id order) with its counted step judgments that pass the filters."""
    query = (select(StepJudgment).join(Completion, Completion.id == StepJudgment.completion_id)
             .where(counted_steps(*filters.sources, project_id=project.id), Completion.rejected_at.is_(None))
             .order_by(StepJudgment.completion_id, StepJudgment.id))  # fmt: skip
    if filters.date_from:
        query = query.where(StepJudgment.created_at >= filters.date_from)
    if filters.date_to:
        query = query.where(StepJudgment.created_at < filters.date_to)
    if filters.include_rater_ids is not None:
        query = query.where(StepJudgment.rater_id.in_(filters.include_rater_ids))
    if filters.exclude_rater_ids:
        query = query.where(StepJudgment.rater_id.is_(None) | StepJudgment.rater_id.not_in(filters.exclude_rater_ids))
    current: int | None = None
    group: list[StepJudgment] = []

    def flush():
        try:
            trajectory = load_trajectory(db, project, current)
        except (NotFound, Unprocessable):
            return None
        if trajectory.prompt.id in filters.exclude_prompt_ids:
            return None
        # a judgment made when the trajectory had another step count cannot be read against it
        return trajectory, [j for j in group if j.n_steps == len(trajectory.steps)]

    for judgment in db.scalars(query):
        if judgment.completion_id != current and group:
            item = flush()
            if item:
                yield item
            group = []
        current = judgment.completion_id
        group.append(judgment)
    if group:
        item = flush()
        if item:
            yield item


def trajectory_step_texts(trajectory: Trajectory) -> list[str]:
    return [step_text(step) for step in trajectory.steps]
