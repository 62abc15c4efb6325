"""Reading rounds: the round's jobs by step, its figures (the judgment figures from app.quality.rounds, the jobs'
own from their typed results) and its JSON (the rounds contract). The flow that moves rounds is
app.training.rounds.

    round_jobs(db, round_, steps) -> {step: Job}     share_complete(db, comparison_ids) -> (complete, total)
    round_metrics(db, round_) -> dict                 round_json(db, round_) -> dict
    round_data(db, comparison_ids) -> [{prompt, completions, verdicts}]
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.jobs.trainer_child import stored_result
from app.models import (
    Comparison,
    Completion,
    DatasetSnapshot,
    Job,
    Judgment,
    ModelVersion,
    Prompt,
    Round,
    RoundStatus,
    User,
)
from app.quality.rounds import round_figures
from trainer.results import GenerationsResult, ModelResult


def round_jobs(db: Session, round_: Round, steps: tuple[str, ...] | None = None) -> dict[str, Job]:
    """The round's step jobs by step name (of `steps` when given)."""
    wanted = {name: job_id for name, job_id in (round_.jobs or {}).items() if steps is None or name in steps}
    found = {job.id: job for job in db.scalars(select(Job).where(Job.id.in_(list(wanted.values()))))}
    return {name: found[job_id] for name, job_id in wanted.items() if job_id in found}


def share_complete(db: Session, comparison_ids: list[int]) -> tuple[int, int]:
    """(complete, total) of these comparisons."""
    if not comparison_ids:
        return 0, 0
    complete = db.scalar(select(func.count()).select_from(Comparison).where(
        Comparison.id.in_(comparison_ids), Comparison.n_judgments >= Comparison.required))  # fmt: skip
    return int(complete or 0), len(comparison_ids)


def _policy_kl(steps: dict[str, Job]) -> float | None:
    """KL of the new policy to the previous one: measured on the evaluation samples (the eval generate job's
    kl_to_reference), else what the policy update itself reported (its result's kl_to_reference)."""
    evaluation, update = stored_result(steps.get("eval")), stored_result(steps.get("policy"))
    if isinstance(evaluation, GenerationsResult) and evaluation.kl_to_reference is not None:
        return evaluation.kl_to_reference
    return update.kl_to_reference if isinstance(update, ModelResult) else None


def round_metrics(db: Session, round_: Round) -> dict:
    """The round's figures, computed from its rows (cached in round.metrics when it finishes): the judgment
    figures from app.quality.rounds.round_figures, plus what the round's jobs report."""
    steps = round_jobs(db, round_)
    since = None
    reward_version = db.get(ModelVersion, round_.reward_version_id) if round_.reward_version_id else None
    if reward_version is not None and reward_version.dataset_id:
        snapshot = db.get(DatasetSnapshot, reward_version.dataset_id)
        since = snapshot.created_at if snapshot else None
    figures = round_figures(db, comparison_ids=list(round_.comparison_ids or []),
                            eval_comparison_ids=list(round_.eval_comparison_ids or []),
                            new_version_id=round_.new_policy_version_id, old_version_id=round_.policy_version_id,
                            eval_scores=round_.eval_scores or {}, reward_since=since)  # fmt: skip
    complete, total = share_complete(db, round_.comparison_ids or [])
    update = stored_result(steps.get("policy"))
    snapshot = db.get(DatasetSnapshot, round_.dataset_id) if round_.dataset_id else None
    return figures | {
        "kl": _policy_kl(steps),
        "prompts": len(round_.prompt_ids or []), "comparisons": total, "comparisons_complete": complete,
        "eval_comparisons": len(round_.eval_comparison_ids or []),
        "pairs_trained": snapshot.rows_train if snapshot else None,
        "policy_train_loss": update.train_loss if isinstance(update, ModelResult) else None,
        **_verified(steps.get("verify")),
    }  # fmt: skip


def _verified(job: Job | None) -> dict:
    """A verifiable project's round: the new policy's pass@1 and pass@k on the evaluation prompts (verify job)."""
    rates = (job.result or {}).get("pass_rates") if job is not None else None
    if not rates:
        return {}
    return {key: rates.get(key) for key in ("pass_at_1", "pass_at_1_ci", "pass_at_k", "pass_at_k_ci", "k")}


def round_json(db: Session, round_: Round) -> dict:
    metrics = round_.metrics if round_.status == RoundStatus.done and round_.metrics else round_metrics(db, round_)
    iso = lambda value: value.isoformat() if value else None  # noqa: E731
    return {
        "id": round_.id, "project_id": round_.project_id, "number": round_.number, "status": round_.status,
        "trigger": round_.trigger, "policy_version_id": round_.policy_version_id,
        "new_policy_version_id": round_.new_policy_version_id, "reward_version_id": round_.reward_version_id,
        "dataset_id": round_.dataset_id, "job_ids": sorted((round_.jobs or {}).values()), "jobs": round_.jobs or {},
        "prompt_ids": round_.prompt_ids or [], "comparison_ids": round_.comparison_ids or [],
        "eval_comparison_ids": round_.eval_comparison_ids or [],
        "started_at": iso(round_.started_at), "finished_at": iso(round_.finished_at),
        "step_times": round_.step_times or {}, "error": round_.error, "failed_job_id": round_.failed_job_id,
        "metrics": metrics,
    }  # fmt: skip


def round_data(db: Session, comparison_ids: list[int], limit: int = 200) -> list[dict]:
    """The first `limit` of these comparisons with their prompt, completions (text, model) and verdicts."""
    ids = sorted(comparison_ids)[:limit]
    if not ids:
        return []
    comparisons = list(db.scalars(select(Comparison).where(Comparison.id.in_(ids)).order_by(Comparison.id)))
    completion_ids = {c for comparison in comparisons for c in comparison.completion_ids}
    completions = {c.id: c for c in db.scalars(select(Completion).where(Completion.id.in_(completion_ids)))}
    prompts = {p.id: p for p in db.scalars(select(Prompt).where(Prompt.id.in_({c.prompt_id for c in comparisons})))}
    verdicts: dict[int, list] = {}
    for comparison_id, ranking, rater in db.execute(
        select(Judgment.comparison_id, Judgment.ranking, User.username)
        .outerjoin(User, User.id == Judgment.rater_id).where(Judgment.comparison_id.in_(ids))
    ):  # fmt: skip
        verdicts.setdefault(comparison_id, []).append({"rater": rater or "imported", "ranking": ranking})
    return [{"id": c.id, "prompt": prompts[c.prompt_id].messages[-1]["content"],
             "completions": [{"id": i, "text": completions[i].text if i in completions else "",
                              "model": completions[i].model_name if i in completions else None}
                             for i in c.completion_ids],
             "verdicts": verdicts.get(c.id, [])} for c in comparisons]  # fmt: skip
