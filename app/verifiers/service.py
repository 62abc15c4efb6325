"""Verifiable projects: their prompts (a `reference` and/or `tests`), `verify` jobs, verdicts, pass rates per model
version, and the human audit of the verifier.

    verifiable_prompts(db, project) / eval_prompt_ids(db, project, params)
    create_verify_job(db, project, base_model=..., params=...)        a queued `verify` job
    pass_rates(rows, k) -> {pass@1, pass@k with bootstrap 95% intervals}   (pure)
    project_verifier(db, project) -> the page's and the API's figures
    sample_for_audit / audit_queue / audit_verdict / error_rates          the human check on the verifier
    update_prompt_verifier(db, project, prompt_id, ...)                   fix or exclude a disputed prompt
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from app.api import get_or_404
from app.audit import audit
from app.errors import Conflict, Forbidden, NotFound, Unprocessable
from app.intervals import wilson_interval
from app.jobs.service import create_job
from app.jobs.trainer_child import LAUNCH_PARAMS, check_launch_params, stored_result
from app.models import (
    Completion,
    Job,
    JobKind,
    JobStatus,
    ModelVersion,
    Project,
    Prompt,
    User,
    Verdict,
    utcnow,
)
from app.models.user import Role
from app.projects.service import get_visible_project, may_rate
from app.verifiers.schemas import VerdictOut
from trainer.results import ScoresResult
from trainer.rewards.verifier import check_reference, check_tests, pass_at_k

VERIFY_PARAMS = {
    "samples": "answers sampled per prompt: the n of pass@k (default 4)",
    "k": "the k of pass@k besides 1 (default: samples; at most the answers a prompt has)",
    "temperature": "sampling temperature of the answers (default 0.8)",
    "max_new_tokens": "longest answer in tokens (default 128)",
    "prompt_ids": "only these prompts (default: the held-out ones, metadata.split test/eval, else all)",
    "max_prompts": "at most this many prompts (default 200)",
    "workers": "sandbox runs at a time (default 2)",
    "seed": "random seed of the sampling",
    "round_id": "the round this job evaluates (set by the round driver)",
    "base_model_from": "id of a job this one depends on: the model version it registered is the one verified",
    **LAUNCH_PARAMS,
}
DEFAULT_SAMPLES = 4
HELD_OUT_SPLITS = ("test", "eval", "validation", "heldout")
BOOTSTRAP_SAMPLES = 1000
wilson = wilson_interval
"""The error rates' interval (the one Wilson interval of the app, app.intervals)."""


def is_excluded(prompt: Prompt) -> bool:
    return bool((prompt.meta or {}).get("verify_excluded"))


def verifiable_prompts(db: Session, project: Project, *, include_excluded: bool = False) -> list[Prompt]:
    query = select(Prompt).where(Prompt.project_id == project.id,
                                 or_(Prompt.reference.is_not(None), Prompt.tests.is_not(None))).order_by(Prompt.id)  # fmt: skip
    prompts = [p for p in db.scalars(query) if p.reference is not None or p.tests is not None]  # JSON null
    return prompts if include_excluded else [p for p in prompts if not is_excluded(p)]


def eval_prompt_ids(db: Session, project: Project, params: dict) -> list[int]:
    """The prompts a verify job scores: `prompt_ids`, else the held-out ones (metadata.split), else all."""
    prompts = verifiable_prompts(db, project)
    if params.get("prompt_ids"):
        wanted = {int(i) for i in params["prompt_ids"]}
        prompts = [p for p in prompts if p.id in wanted]
    else:
        held_out = [p for p in prompts if str((p.meta or {}).get("split", "")).lower() in HELD_OUT_SPLITS]
        prompts = held_out or prompts
    return [p.id for p in prompts][: int(params.get("max_prompts") or 200)]


def _int_param(params: dict, name: str, low: int, high: int, default: int) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Unprocessable(f"params.{name} must be an integer from {low} to {high}, got {value!r}.")
    return value


def samples_per_prompt(params: dict) -> int:
    return int(params.get("samples") or DEFAULT_SAMPLES)


def pass_k(params: dict) -> int:
    """The k of a verify job's pass@k, the same default for its params and its figures: `k`, else the samples per
    prompt (a job on existing answers too, where pass_rates then bounds it by the answers a prompt has)."""
    return int(params.get("k") or samples_per_prompt(params))


def check_params(params: dict | None) -> dict:
    params = dict(params or {})
    unknown = sorted(set(params) - set(VERIFY_PARAMS))
    if unknown:
        raise Unprocessable(f"Unknown param(s) for verify: {', '.join(unknown)}; known: {', '.join(VERIFY_PARAMS)}.")
    samples = _int_param(params, "samples", 1, 64, DEFAULT_SAMPLES)
    _int_param(params, "k", 1, samples, samples)
    _int_param(params, "max_new_tokens", 1, 4096, 128)
    _int_param(params, "max_prompts", 1, 100_000, 200)
    _int_param(params, "workers", 1, 32, 2)
    check_launch_params(params)
    if params.get("base_model_from") is not None:
        _int_param(params, "base_model_from", 1, 2**31 - 1, 1)
    temperature = params.get("temperature", 0.8)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 5:
        raise Unprocessable(f"params.temperature must be a number from 0 to 5, got {temperature!r}.")
    if params.get("prompt_ids") is not None and not (
        isinstance(params["prompt_ids"], list) and all(isinstance(i, int) and not isinstance(i, bool)
                                                       for i in params["prompt_ids"])):  # fmt: skip
        raise Unprocessable("params.prompt_ids must be a list of prompt ids.")
    return params


def resolve_version(db: Session, ref) -> ModelVersion:
    version = None
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        version = db.get(ModelVersion, int(ref))
    if version is None and isinstance(ref, str):
        version = db.scalar(select(ModelVersion).where(ModelVersion.name == ref).order_by(ModelVersion.id.desc()))
    if version is None:
        raise NotFound(f"No model version {ref!r}.")
    if version.kind != "policy":
        raise Unprocessable(f"Model version {version.name} is a {version.kind} model; verify needs a policy.")
    return version


def create_verify_job(db: Session, project: Project, *, base_model=None, params: dict | None = None,
                      actor: User | None = None, depends_on: Sequence[int] = ()) -> Job:  # fmt: skip
    """Queue a `verify` job: with a policy version, it samples `samples` answers per held-out prompt and verifies
    them; without one, it verifies the project's answers that have no verdict yet (imported or generated)."""
    params = check_params(params)
    if not verifiable_prompts(db, project):
        raise Unprocessable(f"Project {project.slug} has no verifiable prompts: import prompts with a reference or "
                            "tests (formats native, gsm8k, humaneval).")  # fmt: skip
    version = resolve_version(db, base_model) if base_model not in (None, "") else None
    if params.get("base_model_from") is not None:
        if db.get(Job, params["base_model_from"]) is None:
            raise Unprocessable(f"params.base_model_from: no job {params['base_model_from']}.")
        depends_on = sorted({*depends_on, params["base_model_from"]})
    job = create_job(db, JobKind.verify, project_id=project.id, params=params, actor=actor,
                     base_model_id=version.id if version else None, depends_on=depends_on)  # fmt: skip
    audit(db, actor, "job.create", "job", job.id, kind=JobKind.verify)
    return job


# --------------------------------------------------------------------------------------------------------------
# pass rates
# --------------------------------------------------------------------------------------------------------------


def _bootstrap(per_prompt: list[float], seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean over prompts."""
    if not per_prompt:
        return (math.nan, math.nan)
    if len(per_prompt) == 1:
        return (per_prompt[0], per_prompt[0])
    rng = random.Random(seed)
    m = len(per_prompt)
    means = sorted(sum(per_prompt[rng.randrange(m)] for _ in range(m)) / m for _ in range(BOOTSTRAP_SAMPLES))
    return (means[int(0.025 * BOOTSTRAP_SAMPLES)], means[int(0.975 * BOOTSTRAP_SAMPLES) - 1])


def pass_rates(rows: Sequence[tuple[int, bool]], k: int) -> dict:
    """pass@1 and pass@k (Chen et al.'s unbiased estimator per prompt, averaged over prompts) with bootstrap 95%
    intervals over prompts, from (prompt id, passed) rows. Prompts with fewer than k answers are left out of
    pass@k."""
    by_prompt: dict[int, list[bool]] = defaultdict(list)
    for prompt_id, passed in rows:
        by_prompt[prompt_id].append(bool(passed))
    ones = [pass_at_k(len(v), sum(v), 1) for v in by_prompt.values()]
    ks = [pass_at_k(len(v), sum(v), k) for v in by_prompt.values() if len(v) >= k]
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    low1, high1 = _bootstrap(ones)
    lowk, highk = _bootstrap(ks, seed=1)
    return {"prompts": len(by_prompt), "answers": len(rows), "k": k,
            "pass_at_1": mean(ones), "pass_at_1_ci": [low1, high1] if ones else None,
            "pass_at_k": mean(ks), "pass_at_k_ci": [lowk, highk] if ks else None}  # fmt: skip


def job_pass_rates(db: Session, job: Job) -> dict:
    rows = db.execute(select(Verdict.prompt_id, Verdict.passed, Verdict.reason).where(Verdict.job_id == job.id)).all()
    k = pass_k(job.params or {})
    k = max(1, min(k, max((n for n in _answers_per_prompt(rows).values()), default=1)))
    result = pass_rates([(r.prompt_id, r.passed) for r in rows], k)
    reasons: dict[str, int] = defaultdict(int)
    for row in rows:
        reasons[row.reason] += 1
    result["reasons"] = dict(sorted(reasons.items()))
    return result


def _answers_per_prompt(rows) -> dict[int, int]:
    counts: dict[int, int] = defaultdict(int)
    for row in rows:
        counts[row.prompt_id] += 1
    return counts


def version_pass_rates(db: Session, project: Project) -> list[dict]:
    """One entry per finished verify job of the project, oldest first: its version and pass rates."""
    jobs = db.scalars(select(Job).where(Job.project_id == project.id, Job.kind == JobKind.verify,
                                        Job.status == JobStatus.succeeded).order_by(Job.id)).all()  # fmt: skip
    names = dict(db.execute(select(ModelVersion.id, ModelVersion.name)
                            .where(ModelVersion.id.in_([j.base_model_id for j in jobs if j.base_model_id]))).all())  # fmt: skip
    entries = []
    for job in jobs:
        metrics = (job.result or {}).get("pass_rates") or job_pass_rates(db, job)
        entries.append({"job_id": job.id, "model_version_id": job.base_model_id,
                        "model_name": names.get(job.base_model_id) or (job.result or {}).get("model_name")
                        or "existing answers", "round_id": (job.params or {}).get("round_id"),
                        "finished_at": job.finished_at.isoformat() if job.finished_at else None, **metrics})  # fmt: skip
    return entries


# --------------------------------------------------------------------------------------------------------------
# the human audit of the verifier
# --------------------------------------------------------------------------------------------------------------


def _audit_weight(verdict: Verdict, score: float | None, median: float | None) -> float:
    """Weights of the audit sample: passes the reward model scores low, failures it scores high, and numeric
    answers near the tolerance are where a verifier's mistakes hide."""
    weight = 1.0
    if verdict.near_tolerance:
        weight *= 4.0
    if score is not None and median is not None:
        if verdict.passed and score < median:
            weight *= 3.0
        if not verdict.passed and score > median:
            weight *= 3.0
    if verdict.reason in ("sandbox_error", "timeout", "memory"):
        weight *= 2.0
    return weight


def reward_scores(db: Session, project: Project, completion_ids: list[int]) -> dict[int, float]:
    """Reward-model scores of these completions: a `score` metadata field, else the newest finished `score` job
    of the project (its typed result's scores)."""
    scores = {c.id: float(c.meta["score"]) for c in db.scalars(select(Completion).where(Completion.id.in_(completion_ids)))
              if isinstance((c.meta or {}).get("score"), (int, float))}  # fmt: skip
    job = db.scalar(select(Job).where(Job.project_id == project.id, Job.kind == JobKind.score,
                                      Job.status == JobStatus.succeeded).order_by(Job.id.desc()).limit(1))  # fmt: skip
    result = stored_result(job)
    if isinstance(result, ScoresResult) and Path(result.output_dir).is_dir():
        wanted = set(completion_ids)
        scores |= {i: score for i, score in result.read_scores().items() if i in wanted and i not in scores}
    return scores


def sample_for_audit(db: Session, project: Project, count: int, actor: User | None = None, seed: int | None = None) -> int:
    """Mark up to `count` not-yet-audited verdicts as pending audit, drawn with the weights above (without
    replacement); returns how many were marked."""
    candidates = db.scalars(select(Verdict).where(Verdict.project_id == project.id, Verdict.audit_status.is_(None))
                            .order_by(Verdict.id.desc()).limit(5000)).all()  # fmt: skip
    if not candidates:
        return 0
    scores = reward_scores(db, project, [v.completion_id for v in candidates])
    known = sorted(scores.values())
    median = known[len(known) // 2] if known else None
    rng = random.Random(seed)
    keyed = []
    for verdict in candidates:
        weight = _audit_weight(verdict, scores.get(verdict.completion_id), median)
        keyed.append((rng.random() ** (1.0 / weight), verdict))  # Efraimidis-Spirakis weighted sampling
    keyed.sort(key=lambda item: item[0], reverse=True)
    chosen = [v for _, v in keyed[:count]]
    for verdict in chosen:
        verdict.audit_status = "pending"
    audit(db, actor, "verifier.audit_sample", "project", project.id, count=len(chosen))
    return len(chosen)


def verdict_json(verdict: Verdict, prompt: Prompt | None = None, completion: Completion | None = None) -> dict:
    """A verdict as the API and pages show it (its shape: VerdictOut), with its prompt and answer when given."""
    data = VerdictOut.model_validate(verdict).model_dump(mode="json", exclude_unset=True)
    if prompt is not None:
        data["prompt"] = prompt.messages[-1]["content"] if not prompt.is_chat else prompt.messages
        data["reference"], data["tests"] = prompt.reference, prompt.tests
        data["prompt_excluded"] = is_excluded(prompt)
    if completion is not None:
        data["answer"] = completion.text
    return data


def verdicts_query(project: Project, *, job_id: int | None = None, passed: bool | None = None,
                   audit_status: str | None = None) -> Select:  # fmt: skip
    """The project's verdicts matching the filters, newest first."""
    query = select(Verdict).where(Verdict.project_id == project.id).order_by(Verdict.id.desc())
    if job_id is not None:
        query = query.where(Verdict.job_id == job_id)
    if passed is not None:
        query = query.where(Verdict.passed.is_(passed))
    if audit_status is not None:
        query = query.where(Verdict.audit_status == audit_status)
    return query


def list_verdicts(db: Session, project: Project, *, job_id: int | None = None, passed: bool | None = None,
                  audit_status: str | None = None, limit: int = 100) -> list[dict]:  # fmt: skip
    query = verdicts_query(project, job_id=job_id, passed=passed, audit_status=audit_status)
    return verdicts_json(db, db.scalars(query.limit(limit)).all())


def verdicts_json(db: Session, verdicts: Sequence[Verdict]) -> list[dict]:
    """The verdicts with their prompts and answers (read in two queries)."""
    prompts = {p.id: p for p in db.scalars(select(Prompt).where(Prompt.id.in_({v.prompt_id for v in verdicts})))}
    completions = {c.id: c for c in db.scalars(select(Completion).where(
        Completion.id.in_({v.completion_id for v in verdicts})))}  # fmt: skip
    return [verdict_json(v, prompts.get(v.prompt_id), completions.get(v.completion_id)) for v in verdicts]


AUDITED_STATUSES = ("pending", "right", "wrong")
"""A verdict drawn into the audit sample (`sample_for_audit`) is pending, then audited right or wrong; only those
are audited: the sample is what the verifier's published error rates are estimated from."""


def audit_project(db: Session, project_ref: str | int, user: User) -> Project:
    """The project whose audit queue `user` reads: the project's own visibility rule (an annotator sees a
    members-only project only as its member, and no archived one; staff see every project)."""
    return get_visible_project(db, project_ref, user)


def check_may_audit(db: Session, project: Project, user: User) -> None:
    """Auditing is a judgment on the verifier, held to the rating rule: on a members-only project only its members
    audit, whatever their role; admins, who run the audit, always may."""
    if user.role != Role.admin and not may_rate(db, project, user):
        raise Forbidden("You are not a member of this project.")


def project_verdict(db: Session, project: Project, verdict_id: int) -> Verdict:
    """A verdict of this project; another project's verdict is not found here (no reading across projects)."""
    return get_or_404(db, Verdict, verdict_id, "verdict", project=project)


def verdict_project(db: Session, verdict_id: int, user: User) -> Project:
    """The project of a verdict addressed by id alone (the older URL), after the same visibility check: a verdict
    of a project the user may not see is reported missing, not forbidden (its existence is not disclosed)."""
    verdict = get_or_404(db, Verdict, verdict_id, "verdict")
    try:
        return audit_project(db, verdict.project_id, user)
    except Forbidden as error:
        raise NotFound(f"No verdict {verdict_id}.") from error


def audit_verdict(db: Session, project: Project, verdict_id: int, correct: bool, note: str,
                  actor: User) -> Verdict:  # fmt: skip
    """Record a human's audit of a sampled verdict of `project` (membership checked, other projects' verdicts and
    verdicts never sampled refused)."""
    check_may_audit(db, project, actor)
    verdict = project_verdict(db, project, verdict_id)
    if verdict.audit_status not in AUDITED_STATUSES:
        raise Conflict(f"Verdict {verdict_id} was not sampled for audit; only sampled verdicts are audited "
                       "(draw a sample first: POST .../verdicts/audit-sample).")
    verdict.audit_status = "right" if correct else "wrong"
    verdict.audit_note = note or None
    verdict.audited_by_id = actor.id
    verdict.audited_at = utcnow()
    audit(db, actor, "verifier.audit", "verdict", verdict.id, correct=correct)
    return verdict


def error_rates(db: Session, project: Project) -> dict:
    """The verifier's false-positive rate (audited passes a human found wrong) and false-negative rate (audited
    failures a human found wrong), with Wilson 95% intervals. The audit sample is weighted toward suspicious
    verdicts, so these rates are upper-leaning estimates for the whole project."""
    rows = db.execute(select(Verdict.passed, Verdict.audit_status).where(
        Verdict.project_id == project.id, Verdict.audit_status.in_(("right", "wrong", "pending")))).all()  # fmt: skip
    result = {"pending": sum(1 for r in rows if r.audit_status == "pending")}
    for name, passed in (("false_positive", True), ("false_negative", False)):
        audited = [r for r in rows if r.passed is passed and r.audit_status in ("right", "wrong")]
        wrong = sum(1 for r in audited if r.audit_status == "wrong")
        low, high = wilson(wrong, len(audited))
        result[name] = {"rate": wrong / len(audited) if audited else None, "ci": [low, high] if audited else None,
                        "audited": len(audited), "wrong": wrong}  # fmt: skip
    return result


def disputed_prompts(db: Session, project: Project) -> list[dict]:
    """Prompts with at least one verdict a human found wrong: to fix (reference, tests) or exclude."""
    rows = db.execute(select(Verdict.prompt_id, Verdict.id).where(Verdict.project_id == project.id,
                                                                 Verdict.audit_status == "wrong")).all()  # fmt: skip
    by_prompt: dict[int, list[int]] = defaultdict(list)
    for row in rows:
        by_prompt[row.prompt_id].append(row.id)
    prompts = {p.id: p for p in db.scalars(select(Prompt).where(Prompt.id.in_(list(by_prompt))))}
    return [{"prompt_id": pid, "verdict_ids": ids, "excluded": is_excluded(prompts[pid]),
             "prompt": prompts[pid].messages[-1]["content"][:300], "reference": prompts[pid].reference,
             "tests": prompts[pid].tests} for pid, ids in sorted(by_prompt.items()) if pid in prompts]  # fmt: skip


def update_prompt_verifier(db: Session, project: Project, prompt_id: int, *, excluded: bool | None = None,
                           reference: dict | None = None, tests: dict | None = None,
                           actor: User | None = None) -> Prompt:  # fmt: skip
    """Fix a disputed prompt's reference or tests, or exclude it from verify jobs and GRPO prompts."""
    prompt = get_or_404(db, Prompt, prompt_id, "prompt", project=project)
    try:
        if reference is not None:
            prompt.reference = check_reference(reference)
        if tests is not None:
            prompt.tests = check_tests(tests)
    except ValueError as error:
        raise Unprocessable(str(error)) from error
    if excluded is not None:
        prompt.meta = {**(prompt.meta or {}), "verify_excluded": bool(excluded)}
    audit(db, actor, "verifier.prompt_update", "prompt", prompt.id, excluded=excluded,
          reference=reference is not None, tests=tests is not None)  # fmt: skip
    return prompt


def project_verifier(db: Session, project: Project) -> dict:
    """What the verifier page and `GET /api/v1/projects/{id}/verifier` show."""
    prompts = verifiable_prompts(db, project, include_excluded=True)
    excluded = sum(1 for p in prompts if is_excluded(p))
    return {"project_id": project.id, "verifiable": bool(prompts), "prompts": len(prompts) - excluded,
            "excluded": excluded, "with_reference": sum(1 for p in prompts if p.reference is not None),
            "with_tests": sum(1 for p in prompts if p.tests is not None),
            "versions": version_pass_rates(db, project), "audit": error_rates(db, project),
            "disputed": disputed_prompts(db, project)}  # fmt: skip
