"""Rounds: the loop running itself. One round of a project is

    generating  the current policy samples `samples_per_prompt` completions for the round's prompts (a generate
                job); comparisons enter the queue; a score job orders them by reward-model uncertainty when a
                reward model exists
    rating      raters rate until the round's comparisons are complete (or a share of them, or a deadline)
    training    a snapshot of the judgments so far (evaluation prompts left out) -> reward model retrained when
                the recipe says (always for ppo/grpo/rloo) -> policy update (dpo, kto, ppo, grpo, rloo)
    evaluating  the new version and the previous one answer the held-out evaluation prompts; those pairs go to
                raters (arena comparisons); a score job scores them with the round's reward model
    done        metrics: human win rate of new over previous (ties half a win, 95% Wilson interval; the AI judges'
                beside it), reward accuracy on judgments made after the reward model's snapshot, KL, mean reward
                score (the judgment figures: app.quality.rounds)

Every step is an ordinary job (visible on the jobs pages) chained to the previous one by a job dependency, so
the queue runs a stage's jobs back to back; the round row only remembers which jobs are its steps. Its state
is derived from theirs by `advance`, which the worker calls between jobs (`tick`, under a lease lock so one
worker acts): a worker killed mid-round leaves jobs the queue retries, and the next tick carries on. A failed
step fails the round with the job linked; `retry_step` re-queues it (and the steps it stopped).
"""


from __future__ import annotations

import logging
import math
import random
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.audit import audit
from app.db import session_scope
from app.errors import Conflict, NotFound, RankforgeError, Unprocessable
from app.jobs import service as jobs
from app.jobs.trainer_child import stored_result
from app.models import (
    ROUND_ACTIVE,
    Completion,
    Job,
    JobKind,
    JobStatus,
    Judgment,
    ModelVersion,
    Project,
    ProjectStatus,
    Prompt,
    Round,
    RoundStatus,
    User,
    utcnow,
)
from app.registry.service import newest_version
from app.training.kinds import KIND_INFO, POLICY_UPDATES
from app.training.round_recipe import RoundRecipe, get_recipe
from app.training.round_views import round_jobs, round_json, round_metrics, share_complete
from app.training.scheduler import acquire_lock, describe, note_problem, run_alone
from app.training.service import create_training_job
from app.verifiers.service import create_verify_job, verifiable_prompts
from app.webhooks.service import emit
from trainer.results import ScoresResult

log = logging.getLogger("rankforge.rounds")

LOCK_NAME = "rounds"
NEEDS_REWARD = tuple(kind for kind in POLICY_UPDATES if KIND_INFO[kind].reward_model != "none")
"""Policy updates that train against a reward model: the round always retrains one for them."""
STEP_STAGE = {"generate": RoundStatus.generating, "score": RoundStatus.generating, "judge": RoundStatus.generating,
              "reward": RoundStatus.training, "policy": RoundStatus.training,
              "eval_previous": RoundStatus.evaluating, "eval": RoundStatus.evaluating,
              "eval_score": RoundStatus.evaluating, "verify": RoundStatus.evaluating}  # fmt: skip
"""Each step's job and the stage it belongs to (a retried step puts the round back in that stage)."""

def _pool(db: Session, project: Project, recipe: RoundRecipe) -> list[int]:
    query = select(Prompt.id).where(Prompt.project_id == project.id).order_by(Prompt.priority.desc(), Prompt.id)
    if recipe.pool_batch:
        query = query.where(Prompt.batch == recipe.pool_batch)
    return list(db.scalars(query))


def ensure_eval_prompts(db: Session, project: Project, recipe: RoundRecipe) -> list[int]:
    """The fixed evaluation prompts, held out of the pool the first time they are needed: eval_fraction of it,
    at least eval_min_prompts when the pool has twice as many (a seeded draw, so it is reproducible)."""
    if recipe.eval_prompt_ids or recipe.eval_fraction == 0:
        return recipe.eval_prompt_ids
    used = set(_used_prompts(db, project))
    pool = [i for i in _pool(db, project, recipe) if i not in used]
    wanted = max(round(recipe.eval_fraction * len(pool)), min(recipe.eval_min_prompts, len(pool) // 2))
    chosen = sorted(random.Random(project.id).sample(pool, min(wanted, len(pool))))
    recipe.eval_prompt_ids = chosen
    project.round_recipe = recipe.model_dump(mode="json")
    return chosen


def _used_prompts(db: Session, project: Project) -> list[int]:
    used: list[int] = []
    for ids in db.scalars(select(Round.prompt_ids).where(Round.project_id == project.id,
                                                         Round.status != RoundStatus.cancelled)):  # fmt: skip
        used += ids or []
    return used


def _active_round(db: Session, project_id: int) -> Round | None:
    return db.scalar(select(Round).where(Round.project_id == project_id, Round.status.in_(list(ROUND_ACTIVE)))
                     .order_by(Round.number.desc()).limit(1))  # fmt: skip


def _last_round(db: Session, project_id: int) -> Round | None:
    return db.scalar(select(Round).where(Round.project_id == project_id).order_by(Round.number.desc()).limit(1))


def current_policy(db: Session, project: Project) -> ModelVersion | None:
    """The policy the next round starts from: the newest one a finished round made, else the project's newest."""
    made = db.scalar(select(Round.new_policy_version_id).where(Round.project_id == project.id,
                                                               Round.status == RoundStatus.done,
                                                               Round.new_policy_version_id.is_not(None))
                     .order_by(Round.number.desc()).limit(1))  # fmt: skip
    return db.get(ModelVersion, made) if made else newest_version(db, "policy", project.id)


def start_round(db: Session, project: Project, *, actor: User | None = None, trigger: str = "manual") -> Round:
    """Round N+1: queue its generate job (and the score job that waits for it). 409 while a round runs."""
    # One start at a time per project: PostgreSQL locks the project row (a second start waits, then sees the
    # round the first one made); SQLite writers are serialized already (BEGIN IMMEDIATE).
    db.execute(select(Project.id).where(Project.id == project.id).with_for_update())
    active = _active_round(db, project.id)
    if active is not None:
        raise Conflict(f"Round {active.number} of {project.slug} is still {active.status}.")
    recipe = get_recipe(project)
    eval_ids = set(ensure_eval_prompts(db, project, recipe))
    used = set(_used_prompts(db, project))
    prompts = [i for i in _pool(db, project, recipe) if i not in eval_ids and i not in used][: recipe.prompts_per_round]
    if not prompts:
        raise Conflict(f"No unused prompts left in {project.slug}'s pool"
                       f"{f' (batch {recipe.pool_batch})' if recipe.pool_batch else ''}: import more.")  # fmt: skip
    policy = current_policy(db, project)
    if policy is None:
        raise Unprocessable("No policy model version is registered: register one (`rankforge models add` or "
                            "`rankforge models init-tiny`).")  # fmt: skip
    last = _last_round(db, project.id)
    now = utcnow()
    round_ = Round(project_id=project.id, number=(last.number if last else 0) + 1, status=RoundStatus.generating,
                   recipe=recipe.model_dump(mode="json"), trigger=trigger[:200], prompt_ids=prompts,
                   policy_version_id=policy.id, started_at=now, stage_started_at=now,
                   created_by_id=actor.id if actor else None)  # fmt: skip
    db.add(round_)
    db.flush()
    sampling = {"temperature": recipe.temperature, "top_p": recipe.top_p, "max_new_tokens": recipe.max_new_tokens}
    generate = create_training_job(db, project, JobKind.generate, base_model=policy.id, actor=actor,
                                   params={"num_completions": recipe.samples_per_prompt, **sampling,
                                           "prompt_ids": prompts, "round_id": round_.id})  # fmt: skip
    steps = {"generate": generate.id}
    reward = newest_version(db, "reward", project.id)
    if recipe.score_before_rating and reward is not None:
        score = create_training_job(db, project, JobKind.score, reward_model=reward.id, actor=actor,
                                    params={"prompt_ids": prompts, "round_id": round_.id},
                                    depends_on=[generate.id])  # fmt: skip
        steps["score"] = score.id
    if recipe.judge:  # the judge labels the new comparisons (batch job-<generate id>) before humans rate
        from app.judges.service import create_judge_job

        steps["judge"] = create_judge_job(db, project, judge=recipe.judge, actor=actor, depends_on=[generate.id],
                                          params={"scope": "open", "batch": f"job-{generate.id}",
                                                  "round_id": round_.id}).id  # fmt: skip
    round_.jobs = steps
    for job_id in steps.values():
        _label(db, job_id, round_, "generating")
    audit(db, actor, "round.start", "round", round_.id, project_id=project.id, number=round_.number, trigger=trigger)
    return round_


def _label(db: Session, job_id: int, round_: Round, stage: str) -> None:
    job = db.get(Job, job_id)
    if not jobs.dependencies(db, job_id):
        job.message = f"queued: round {round_.number}, {stage}"


def _steps_of(stage: str) -> tuple[str, ...]:
    """The steps of one stage (STEP_STAGE)."""
    return tuple(step for step, step_stage in STEP_STAGE.items() if step_stage == stage)


def _eval_scores(job: Job) -> dict[str, float]:
    """The reward scores of the evaluation answers, from the eval score job's typed result (a completion id
    string -> score, as the round row keeps them)."""
    result = stored_result(job)
    if not isinstance(result, ScoresResult):
        return {}
    return {str(completion_id): score for completion_id, score in result.read_scores().items()}


def _stage_done(db: Session, round_: Round, steps: tuple[str, ...]) -> bool | None:
    """True: every step of the stage succeeded; None: one failed (the round is failed now); False: running."""
    stage_jobs = round_jobs(db, round_, steps)
    bad = [job for job in stage_jobs.values() if job.status in (JobStatus.failed, JobStatus.cancelled)]
    if bad:
        root = next((j for j in bad if j.message != jobs.STOPPED_BY_DEPENDENCY), bad[0])
        _fail(db, round_, root)
        return None
    return all(job.status == JobStatus.succeeded for job in stage_jobs.values())


def _fail(db: Session, round_: Round, job: Job) -> None:
    round_.status, round_.failed_job_id, round_.finished_at = RoundStatus.failed, job.id, utcnow()
    step = next((name for name, job_id in round_.jobs.items() if job_id == job.id), job.kind)
    round_.error = f"Step {step} (job {job.id}, {job.kind}) {job.status}: {job.error or job.message}"[:4000]
    log.warning("round %s of project %s failed: %s", round_.number, round_.project_id, round_.error)


def _next_stage(round_: Round, status: str) -> None:
    now = utcnow()
    if round_.stage_started_at is not None:
        round_.step_times = dict(round_.step_times or {}) | {
            round_.status: round(((now - round_.stage_started_at).total_seconds()), 3)}
    round_.status, round_.stage_started_at = status, now


def _rated_enough(db: Session, ids: list[int], share: float, deadline: float | None, since) -> bool:
    complete, total = share_complete(db, ids)
    if total == 0 or complete >= math.ceil(share * total - 1e-9):
        return True
    return deadline is not None and since is not None and utcnow() - since >= timedelta(minutes=deadline)


def advance(db: Session, round_: Round) -> str:
    """Move the round on as far as its jobs and ratings allow; returns its status."""
    project = db.get(Project, round_.project_id)
    recipe = RoundRecipe.model_validate(round_.recipe or {})
    if round_.status == RoundStatus.generating:
        done = _stage_done(db, round_, _steps_of(RoundStatus.generating))
        if done:
            generate = round_jobs(db, round_, ("generate",))["generate"]
            round_.comparison_ids = list((generate.result or {}).get("comparison_ids") or [])
            _next_stage(round_, RoundStatus.rating)
    if round_.status == RoundStatus.rating and _rated_enough(
        db, round_.comparison_ids, recipe.complete_share, recipe.deadline_minutes, round_.stage_started_at
    ):
        savepoint = db.begin_nested()
        try:
            _start_training(db, round_, project, recipe)
        except RankforgeError as error:  # e.g. no reward model for a ppo update: the round cannot go on
            savepoint.rollback()
            round_.status, round_.finished_at = RoundStatus.failed, utcnow()
            round_.error = f"Training could not start: {error.detail}"
            return round_.status
        savepoint.commit()
        _next_stage(round_, RoundStatus.training)
    if round_.status == RoundStatus.training:
        done = _stage_done(db, round_, _steps_of(RoundStatus.training))
        if done:
            steps = round_jobs(db, round_, ("reward", "policy"))
            policy = steps["policy"]
            round_.new_policy_version_id = (policy.result or {}).get("model_version_id")
            round_.dataset_id = (policy.result or {}).get("dataset_id") or policy.dataset_id
            if "reward" in steps:
                round_.reward_version_id = (steps["reward"].result or {}).get("model_version_id")
                round_.dataset_id = round_.dataset_id or steps["reward"].dataset_id
            _next_stage(round_, RoundStatus.evaluating)
    if round_.status == RoundStatus.evaluating:
        done = _stage_done(db, round_, _steps_of(RoundStatus.evaluating))
        if done:
            steps = round_jobs(db, round_, ("eval", "eval_score"))
            if "eval" in steps and not round_.eval_comparison_ids:
                round_.eval_comparison_ids = list((steps["eval"].result or {}).get("comparison_ids") or [])
            if "eval_score" in steps and not round_.eval_scores:
                round_.eval_scores = _eval_scores(steps["eval_score"])
            if _rated_enough(db, round_.eval_comparison_ids, recipe.eval_complete_share,
                             recipe.eval_deadline_minutes, round_.stage_started_at):  # fmt: skip
                _finish(db, round_, project)
    return round_.status


def _start_training(db: Session, round_: Round, project: Project, recipe: RoundRecipe) -> None:
    """Queue the training stage and the evaluation after it, chained by job dependencies."""
    eval_ids = list(get_recipe(project).eval_prompt_ids or recipe.eval_prompt_ids)
    filters: dict = {"date_to": utcnow().isoformat(), "exclude_prompt_ids": eval_ids}
    if recipe.train_on == "round":
        filters["batches"] = [f"job-{round_.jobs['generate']}"]
    if recipe.train_on_ai:  # the judge's verdicts (source ai) train alongside the humans'
        filters["sources"] = ["human", "imported", "ai"]
    tag = {"round_id": round_.id}
    steps = dict(round_.jobs)
    update = recipe.policy_update
    reward_job = None
    if recipe.retrain_reward or update in NEEDS_REWARD:
        reward_job = create_training_job(db, project, JobKind.reward, base_model=round_.policy_version_id,
                                         params=recipe.reward_params | tag | {"snapshot": {"filters": filters}})  # fmt: skip
        steps["reward"] = reward_job.id
    params = recipe.update_params | tag
    update_format = KIND_INFO[update].dataset_format
    if update_format is not None and reward_job is not None and update_format == KIND_INFO[JobKind.reward].dataset_format:
        params["dataset_from"] = reward_job.id  # the snapshot the reward model trains on: built once
    elif update_format is not None:
        params["snapshot"] = {"filters": filters}
    else:
        params["prompt_ids"] = list(round_.prompt_ids)
        if reward_job is not None:
            params["reward_model_from"] = reward_job.id
    policy_job = create_training_job(db, project, update, base_model=round_.policy_version_id, params=params,
                                     depends_on=[reward_job.id] if reward_job else [])  # fmt: skip
    steps["policy"] = policy_job.id
    if eval_ids:
        sampling = {"temperature": recipe.temperature, "top_p": recipe.top_p, "max_new_tokens": recipe.max_new_tokens,
                    "num_completions": 1, "prompt_ids": eval_ids} | tag  # fmt: skip
        waits = [policy_job.id]
        answered = db.scalar(select(Completion.id).where(Completion.prompt_id.in_(eval_ids),
                                                         Completion.model_version_id == round_.policy_version_id)
                             .limit(1))  # fmt: skip
        if answered is None:  # the previous policy has not answered the evaluation prompts yet (round 1)
            previous = create_training_job(db, project, JobKind.generate, base_model=round_.policy_version_id,
                                           params=sampling | {"seed": 2 * round_.number})  # fmt: skip
            steps["eval_previous"] = previous.id
            waits.append(previous.id)
        reference = db.get(ModelVersion, round_.policy_version_id)  # the update's reference: KL measured to it
        evaluate = create_training_job(db, project, JobKind.generate, base_model=round_.policy_version_id,
                                       params=sampling | {"arena": True, "base_model_from": policy_job.id,
                                                          "reference_model": reference.path,
                                                          # never the seed the previous answers were sampled with
                                                          "seed": 2 * round_.number + 1},
                                       depends_on=waits)  # fmt: skip
        steps["eval"] = evaluate.id
        reward = newest_version(db, "reward", project.id)
        if reward is not None:
            score = create_training_job(db, project, JobKind.score, reward_model=reward.id if reward else None,
                                        params={"prompt_ids": eval_ids, **tag}
                                        | ({"reward_model_from": reward_job.id} if reward_job else {}),
                                        depends_on=[evaluate.id])  # fmt: skip
            steps["eval_score"] = score.id
        if verifiable_prompts(db, project):  # a verifiable project: the new policy's pass rates on the same prompts
            verify = create_verify_job(db, project, params={"base_model_from": policy_job.id, "round_id": round_.id,
                                                            "prompt_ids": eval_ids})  # fmt: skip
            steps["verify"] = verify.id
    round_.jobs = steps
    for name in ("reward", "policy", "eval_previous"):
        if name in steps:
            _label(db, steps[name], round_, "training" if name != "eval_previous" else "evaluating")


def _finish(db: Session, round_: Round, project: Project) -> None:
    _next_stage(round_, RoundStatus.done)
    round_.finished_at = utcnow()
    round_.metrics = round_metrics(db, round_)
    emit(db, "round.finished", project.id, round_json(db, round_))
    log.info("round %s of %s done: %s", round_.number, project.slug, round_.metrics)


# --- acting on rounds ----------------------------------------------------------------------------------------


def get_round(db: Session, project: Project, number: int) -> Round:
    round_ = db.scalar(select(Round).where(Round.project_id == project.id, Round.number == number))
    if round_ is None:
        raise NotFound(f"No round {number} in project {project.slug}.")
    return round_


def list_rounds(db: Session, project: Project) -> list[Round]:
    return list(db.scalars(select(Round).where(Round.project_id == project.id).order_by(Round.number)))

def retry_step(db: Session, round_: Round, actor: User | None = None) -> Round:
    """A failed round's failing step back in the queue (with the steps it stopped); the round resumes there."""
    if round_.status != RoundStatus.failed or round_.failed_job_id is None:
        raise Conflict(f"Round {round_.number} is {round_.status}: only a failed round has a step to retry.")
    job = jobs.get_job(db, round_.failed_job_id)
    step = next((name for name, job_id in round_.jobs.items() if job_id == job.id), None)
    jobs.retry(db, job)
    for job_id in round_.jobs.values():  # steps cancelled or stopped along with it
        other = db.get(Job, job_id)
        if other is not None and other.status in (JobStatus.failed, JobStatus.cancelled):
            jobs.retry(db, other)
    round_.status = STEP_STAGE.get(step, RoundStatus.generating)
    round_.error, round_.failed_job_id, round_.finished_at = None, None, None
    audit(db, actor, "round.retry", "round", round_.id, job_id=job.id)
    return round_


def cancel_round(db: Session, round_: Round, actor: User | None = None) -> Round:
    """Cancel the round's pending jobs; the round ends cancelled."""
    if round_.status not in ROUND_ACTIVE and round_.status != RoundStatus.failed:
        raise Conflict(f"Round {round_.number} is already {round_.status}.")
    for job in round_jobs(db, round_).values():
        if job.status in (JobStatus.queued, JobStatus.running):
            jobs.request_cancel(db, job)
    round_.status, round_.finished_at = RoundStatus.cancelled, utcnow()
    audit(db, actor, "round.cancel", "round", round_.id)
    return round_


def auto_start_reason(db: Session, project: Project) -> str | None:
    """Why the recipe's trigger starts the next round now (None: not now)."""
    recipe = get_recipe(project)
    if not recipe.auto_after_previous and not recipe.auto_every_minutes:
        return None
    if _active_round(db, project.id) is not None:
        return None
    last = _last_round(db, project.id)
    if recipe.auto_after_previous and last is not None and last.status == RoundStatus.done:
        return f"round {last.number} finished"
    if recipe.auto_every_minutes:
        since = last.started_at if last is not None else None
        if since is not None and utcnow() - since < timedelta(minutes=recipe.auto_every_minutes):
            return None
        query = select(func.count()).select_from(Judgment).where(Judgment.project_id == project.id)
        if since is not None:
            query = query.where(Judgment.created_at > since)
        new = int(db.scalar(query) or 0)
        if new >= max(recipe.auto_min_judgments, 1):
            return f"every {recipe.auto_every_minutes:g} minutes ({new} new judgments)"
    return None


def tick(worker_id: str) -> list[tuple[int, int, str]]:
    """The worker's idle task: advance every active round and start those the recipes' triggers call for, under
    a lease lock so one worker acts. Returns (project id, round number, status) of the rounds it touched."""
    with session_scope() as db:
        if not acquire_lock(db, worker_id, name=LOCK_NAME):
            return []
    touched = []
    with session_scope(write=True) as db:
        if not run_alone(db, LOCK_NAME):  # PostgreSQL: never beside another worker's tick, even past its lease
            return []
        for project in db.scalars(select(Project).where(Project.status == ProjectStatus.active)):
            round_ = _active_round(db, project.id)
            if round_ is not None:
                before = round_.status
                if _guarded(db, project, advance, db, round_) not in (None, before):
                    touched.append((project.id, round_.number, round_.status))
            reason = _guarded(db, project, auto_start_reason, db, project)  # a stored recipe may be unusable
            if reason is not None:  # in its own savepoint: a round that cannot start leaves the finished one done
                started = _guarded(db, project, start_round, db, project, trigger=f"auto: {reason}")
                if started is not None:
                    touched.append((project.id, started.number, started.status))
                    log.info("round %s of %s started (%s)", started.number, project.slug, reason)
    return touched


def _guarded(db: Session, project: Project, work, *args, **kwargs):
    """work(*args, **kwargs) in a savepoint: on an error it is undone and logged (None returned), the other
    projects go on. The failure is noted on the project's page (cleared when work succeeds again)."""
    savepoint = db.begin_nested()
    try:
        result = work(*args, **kwargs)
    except RankforgeError as error:
        savepoint.rollback()
        log.warning("rounds of %s: %s", project.slug, error.detail)
        note_problem(db, project.id, "rounds", f"Rounds were skipped: {describe(error)}")
        return None
    except Exception as error:
        savepoint.rollback()
        log.exception("rounds of %s failed", project.slug)
        note_problem(db, project.id, "rounds", f"Rounds were skipped: {describe(error)}. Check the round recipe.")
        return None
    savepoint.commit()
    note_problem(db, project.id, "rounds", None)
    return result
