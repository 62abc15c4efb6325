"""Judges (AI feedback): a judge is a model version plus a method (reward, generative, rules, prm) that writes AI
judgments; the project's AI policy decides what they change; their agreement with the humans says how far to
trust them. Services never commit: the request, CLI command or job does.

    create_judge / list_judges / get_judge          a project's judges
    set_template / current_template                  the generative judges' question, versioned like guidelines
    get_policy / set_policy                          off | shadow | prelabel | route, the judge it follows, threshold
    create_judge_job                                  a `judge` job on open, human-judged or chosen comparisons
    write_judge_inputs / store_verdicts              what the judge job hands the trainer child and stores back
    judge_agreement                                   accuracy vs the human majority, kappa, alpha, calibration, ...

Raters never see AI verdicts: nothing here is reachable from the rating page or the tasks API, and an AI judgment
is a `judgment` row with source "ai" that the rating loop, quality statistics and default exports leave out.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from app.api import get_or_404
from app.audit import audit
from app.errors import NotFound, Unprocessable
from app.imports.messages import CONTINUATION_KEY
from app.jobs.service import create_job
from app.jobs.trainer_child import LAUNCH_PARAMS, check_launch_params
from app.judges import gates
from app.judgments.selections import HUMAN, counted
from app.models import (
    AI_POLICIES,
    JUDGE_METHODS,
    AIPolicy,
    AIVerdict,
    Comparison,
    Completion,
    GuidelineVersion,
    Job,
    JobKind,
    Judge,
    JudgeTemplate,
    Judgment,
    ModelVersion,
    Project,
    Prompt,
    User,
)
from app.quality.stats import TIE_CODE, krippendorff_alpha, top_choice_codes
from app.registry.endpoints import is_endpoint
from app.registry.service import get_version
from app.webhooks.service import emit
from trainer.params import DEFAULT_JUDGE_TEMPLATE, parse_params

SCOPES = ("open", "judged", "all")
"""Which comparisons a judge job reads: open ones (still wanting votes), ones humans have judged (to measure the
judge), or every non-gold one. `comparison_ids` or `batch` narrow any of them."""
JOB_PARAMS = ("judge", "scope", "comparison_ids", "batch", "limit", "round_id", "seed", *LAUNCH_PARAMS)
"""Judge-job params the app reads itself; every other key is a trainer.params.JudgeArgs hyperparameter."""
CALIBRATION_BINS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99)
MODEL_KIND = {"reward": "reward", "generative": "policy", "prm": "prm"}
"""The model kind each method reads; a reward or prm judge's version is the job's reward model (as in score jobs)."""


# --- judges, template, policy -----------------------------------------------------------------------------------


def list_judges(db: Session, project: Project) -> list[Judge]:
    return list(db.scalars(select(Judge).where(Judge.project_id == project.id).order_by(Judge.id)))


def get_judge(db: Session, project: Project, ref: int | str) -> Judge:
    query = select(Judge).where(Judge.project_id == project.id)
    text = str(ref)
    judge = db.scalar(query.where(Judge.id == int(text))) if text.isdigit() else None
    judge = judge or db.scalar(query.where(Judge.name == text))
    if judge is None:
        raise NotFound(f"No judge {ref!r} in project {project.slug}.")
    return judge


def create_judge(db: Session, project: Project, name: str, method: str, model=None, params: dict | None = None,
                 actor: User | None = None) -> Judge:  # fmt: skip
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise Unprocessable("A judge needs a name of 1 to 100 characters.")
    if method not in JUDGE_METHODS:
        raise Unprocessable(f"method must be one of {', '.join(JUDGE_METHODS)}.")
    if db.scalar(select(Judge.id).where(Judge.project_id == project.id, Judge.name == name)) is not None:
        raise Unprocessable(f"Project {project.slug} already has a judge named {name!r}.")
    version = None
    if method in MODEL_KIND:
        if model in (None, ""):
            raise Unprocessable(f"A {method} judge needs a model version (a {MODEL_KIND[method]} model).")
        version = get_version(db, model, kind=MODEL_KIND[method])
    params = dict(params or {})
    if "template" in params or "method" in params:
        raise Unprocessable("params: the template is the project's (PUT /api/v1/projects/{id}/judges/template, "
                            "versioned) and the method is the judge's own.")  # fmt: skip
    _trainer_args(method, params)
    judge = Judge(project_id=project.id, name=name, method=method, model_version_id=version.id if version else None,
                  params=params, created_by_id=actor.id if actor else None)  # fmt: skip
    db.add(judge)
    db.flush()
    audit(db, actor, "judge.create", "judge", judge.id, method=method, model_version_id=judge.model_version_id)
    return judge


def _trainer_args(method: str, params: dict):
    try:
        return parse_params(JobKind.judge, {k: v for k, v in params.items() if k not in JOB_PARAMS} | {"method": method})
    except ValueError as error:
        raise Unprocessable(f"params: {error}") from error


def current_template(db: Session, project: Project) -> tuple[int, str]:
    """(version, body) of the project's judge template; version 0 is the built-in default."""
    version = get_policy(db, project).template_version or 0
    if version == 0:
        return 0, DEFAULT_JUDGE_TEMPLATE
    body = db.scalar(select(JudgeTemplate.body).where(JudgeTemplate.project_id == project.id,
                                                      JudgeTemplate.version == version))  # fmt: skip
    return version, body if body is not None else DEFAULT_JUDGE_TEMPLATE


def template_versions(db: Session, project: Project) -> list[JudgeTemplate]:
    return list(db.scalars(select(JudgeTemplate).where(JudgeTemplate.project_id == project.id)
                           .order_by(JudgeTemplate.version.desc())))  # fmt: skip


def set_template(db: Session, project: Project, body: str, actor: User | None = None) -> int:
    """A new template version (the fields it may use: {guidelines}, {prompt}, {response_a}, {response_b})."""
    if not body or not body.strip():
        raise Unprocessable("The template is empty.")
    if len(body) > 100_000:
        raise Unprocessable("The template is longer than 100,000 characters.")
    missing = [f for f in ("{response_a}", "{response_b}") if f not in body]
    if missing:
        raise Unprocessable(f"The template must show both responses: {', '.join(missing)} missing.")
    newest = db.scalar(select(func.max(JudgeTemplate.version)).where(JudgeTemplate.project_id == project.id)) or 0
    db.add(JudgeTemplate(project_id=project.id, version=newest + 1, body=body,
                         created_by_id=actor.id if actor else None))  # fmt: skip
    policy = _policy_row(db, project)
    policy.template_version = newest + 1
    db.flush()
    audit(db, actor, "judge.template", "project", project.id, version=newest + 1)
    return newest + 1


def _policy_row(db: Session, project: Project) -> AIPolicy:
    policy = db.get(AIPolicy, project.id)
    if policy is None:
        policy = AIPolicy(project_id=project.id, policy="off", threshold=0.9, template_version=0)
        db.add(policy)
        db.flush()
    return policy


def get_policy(db: Session, project: Project) -> AIPolicy:
    return db.get(AIPolicy, project.id) or AIPolicy(project_id=project.id, policy="off", threshold=0.9,
                                                    template_version=0, judge_id=None)  # fmt: skip


def set_policy(db: Session, project: Project, *, policy: str | None = None, judge=None, threshold: float | None = None,
               gate: dict | None = None, actor: User | None = None) -> AIPolicy:  # fmt: skip
    """Set the policy, its judge, threshold and gate (app.judges.gates; {} removes it). Prelabel and route are
    refused for a judge whose latest human-checked sample fails the gate."""
    row = _policy_row(db, project)
    if gate is not None:
        row.gate = gates.normalized(gate)
    if policy is not None:
        if policy not in AI_POLICIES:
            raise Unprocessable(f"policy must be one of {', '.join(AI_POLICIES)}.")
        row.policy = policy
    if judge not in (None, ""):
        row.judge_id = get_judge(db, project, judge).id
    if threshold is not None:
        if not 0.5 <= float(threshold) <= 1.0:
            raise Unprocessable("threshold must be between 0.5 and 1.")
        row.threshold = float(threshold)
    if row.policy in ("prelabel", "route") and row.judge_id is None:
        raise Unprocessable(f"The {row.policy} policy needs a judge whose verdicts it acts on.")
    limits = gates.normalized(row.gate)
    if row.policy in ("prelabel", "route") and limits is not None:
        reasons = gates.failures(limits, gates.latest_sample(judge_agreement(db, project), row.judge_id))
        if reasons:
            raise Unprocessable(f"The judge gate keeps this judge from {row.policy}: {'; '.join(reasons)}.")
    db.flush()
    audit(db, actor, "ai_policy.update", "project", project.id, policy=row.policy, judge_id=row.judge_id,
          threshold=row.threshold)  # fmt: skip
    return row


def policy_json(db: Session, project: Project) -> dict:
    row = get_policy(db, project)
    version, body = current_template(db, project)
    return {"policy": row.policy, "judge_id": row.judge_id, "threshold": row.threshold, "gate": row.gate,
            "template": {"version": version, "body": body}}  # fmt: skip


def enforce_gate(db: Session, project: Project, policy: AIPolicy, judge: Judge) -> bool:
    """Whether the policy may act on this judge's verdicts now (no gate, or its latest human-checked sample
    passes). A failing sample switches the policy to shadow, records the trip and emits judge.gate_failed."""
    limits = gates.normalized(policy.gate)
    if limits is None:
        return True
    sample = gates.latest_sample(judge_agreement(db, project), judge.id)
    reasons = gates.failures(limits, sample)
    if not reasons:
        return True
    record = gates.trip_record(judge.id, judge.name, sample, reasons)
    policy.policy, policy.gate = "shadow", {**limits, "tripped": record}
    db.flush()
    audit(db, None, "ai_policy.gate_failed", "project", project.id, judge_id=judge.id, reasons=reasons)
    emit(db, gates.GATE_FAILED_EVENT, project.id, record | {"project_id": project.id})
    return False


# --- the judge job ----------------------------------------------------------------------------------------------


def create_judge_job(db: Session, project: Project, *, judge=None, params: dict | None = None,
                     actor: User | None = None, depends_on=()) -> Job:  # fmt: skip
    """A queued `judge` job (the worker's judges.handlers.run_judge_job): the judge's model and method, the
    comparisons it reads (params.scope, comparison_ids, batch, limit), hyperparameters checked now."""
    params = dict(params or {})
    judge_ref = judge if judge not in (None, "") else params.get("judge")
    if judge_ref in (None, ""):
        raise Unprocessable("A judge job names its judge: params.judge (id or name).")
    judge_row = get_judge(db, project, judge_ref)
    if not judge_row.active:
        raise Unprocessable(f"Judge {judge_row.name} is retired.")
    if judge_row.method in MODEL_KIND and judge_row.model_version_id is None:
        raise Unprocessable(f"Judge {judge_row.name}'s model version is gone (deleted from the registry).")
    params["judge"] = judge_row.id
    if "template" in params or "method" in params:
        raise Unprocessable("params: a judge job reads its judge's method and the project's template.")
    scope = params.setdefault("scope", "open")
    if scope not in SCOPES:
        raise Unprocessable(f"params.scope must be one of {', '.join(SCOPES)}.")
    ids = params.get("comparison_ids")
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, int) and i > 0 for i in ids)):
        raise Unprocessable("params.comparison_ids must be a list of comparison ids.")
    if params.get("limit") is not None and not (isinstance(params["limit"], int) and params["limit"] > 0):
        raise Unprocessable("params.limit must be a positive integer.")
    check_launch_params(params)
    args = _trainer_args(judge_row.method, judge_row.params | params)
    if args.rubric:
        version = db.get(ModelVersion, judge_row.model_version_id) if judge_row.model_version_id else None
        if judge_row.method != "generative" or not is_endpoint(db, version):
            raise Unprocessable("Rubric judging (params.rubric) is for generative judges whose model is an endpoint.")
        if not project.attributes:
            raise Unprocessable(f"Rubric judging asks per attribute, and project {project.slug} has no attribute "
                                "scales.")  # fmt: skip
    model_id = judge_row.model_version_id
    job = create_job(db, JobKind.judge, project_id=project.id, params=params,
                     base_model_id=model_id if judge_row.method == "generative" else None,
                     reward_model_id=model_id if judge_row.method != "generative" else None,
                     actor=actor, depends_on=depends_on)  # fmt: skip
    audit(db, actor, "job.create", "job", job.id, kind=JobKind.judge, judge_id=judge_row.id)
    return job


def trainer_params(db: Session, job: Job) -> tuple[Judge, dict, int, str]:
    """(judge, the JudgeArgs params, template version, template body) of a judge job."""
    project = db.get(Project, job.project_id)
    judge = db.get(Judge, int(job.params["judge"]))
    if judge is None:
        raise NotFound("The job's judge is gone.")
    params = {k: v for k, v in (judge.params | job.params).items() if k not in JOB_PARAMS} | {"method": judge.method}
    version, body = current_template(db, project) if judge.method == "generative" else (0, "")
    if judge.method == "generative" and "template" not in params:
        params["template"] = body
    return judge, params, version, body


def write_judge_inputs(db: Session, job: Job, path: Path) -> int:
    """The comparisons the job judges, without the ones this judge already judged with this template (so a retried
    or repeated job resumes where the last stopped), as JSON lines for trainer.judge."""
    project = db.get(Project, job.project_id)
    judge, _params, version, _body = trainer_params(db, job)
    done = select(AIVerdict.comparison_id).where(AIVerdict.judge_id == judge.id, AIVerdict.template_version == version)
    query = select(Comparison).where(Comparison.project_id == project.id, ~Comparison.is_gold, ~Comparison.practice,
                                     Comparison.id.not_in(done)).order_by(Comparison.id)  # fmt: skip
    scope = job.params.get("scope", "open")
    human = select(Judgment.comparison_id).where(counted(HUMAN, project_id=project.id))
    if scope == "open":
        query = query.where(Comparison.n_judgments < Comparison.required)
    elif scope == "judged":
        query = query.where(Comparison.id.in_(human))
    if job.params.get("comparison_ids") is not None:
        query = query.where(Comparison.id.in_([int(i) for i in job.params["comparison_ids"]]))
    if job.params.get("batch"):
        query = query.where(Comparison.batch == str(job.params["batch"]))
    if job.params.get("limit"):
        query = query.limit(int(job.params["limit"]))
    comparisons = list(db.scalars(query))
    prompts = {p.id: p for p in db.scalars(select(Prompt).where(Prompt.id.in_({c.prompt_id for c in comparisons})))}
    wanted = {i for c in comparisons for i in c.completion_ids}
    stored = db.execute(select(Completion.id, Completion.text, Completion.meta).where(Completion.id.in_(wanted))).all()
    texts = {row.id: row.text for row in stored}
    continuations = {row.id: row.meta[CONTINUATION_KEY] for row in stored
                     if isinstance(row.meta, dict) and isinstance(row.meta.get(CONTINUATION_KEY), list)}  # fmt: skip
    guidelines = db.scalar(select(GuidelineVersion.body).where(GuidelineVersion.project_id == project.id,
                                                               GuidelineVersion.version == project.guideline_version))  # fmt: skip
    n = 0
    with open(path, "w", encoding="utf-8") as handle:
        for comparison in comparisons:
            prompt = prompts[comparison.prompt_id]
            if judge.method == "rules" and prompt.reference is None:
                continue
            row = {"comparison_id": comparison.id, "prompt": prompt.value,
                   "completions": [{"completion_id": c, "text": texts[c],
                                    **({"messages": continuations[c]} if c in continuations else {})}
                                   for c in comparison.completion_ids],
                   "guidelines": guidelines or ""}  # fmt: skip
            if prompt.reference is not None:
                row["reference"] = prompt.reference
            handle.write(json.dumps(row) + "\n")
            n += 1
    return n


def store_verdicts(db: Session, job: Job, verdicts: list[dict]) -> dict:
    """AI judgments from the judge's verdicts, each with its ai_verdict row, and the AI policy applied; a verdict
    this judge already gave (same comparison, same template version) is skipped, so storing twice adds nothing."""
    judge, _params, version, _body = trainer_params(db, job)
    project = db.get(Project, job.project_id)
    policy = get_policy(db, project)
    acts = policy.policy in ("prelabel", "route") and policy.judge_id == judge.id
    existing = set(db.scalars(select(AIVerdict.comparison_id).where(AIVerdict.judge_id == judge.id,
                                                                     AIVerdict.template_version == version)))  # fmt: skip
    comparisons = {c.id: c for c in db.scalars(select(Comparison).where(
        Comparison.id.in_([int(v["comparison_id"]) for v in verdicts])))}  # fmt: skip
    stored = counted = routed_to_humans = 0
    actable: list[tuple[AIVerdict, int, float]] = []
    for verdict in verdicts:
        comparison = comparisons.get(int(verdict["comparison_id"]))
        if comparison is None or comparison.id in existing or comparison.project_id != project.id:
            continue
        ranking = [[int(c) for c in group] for group in verdict["ranking"]]
        if sorted(c for g in ranking for c in g) != sorted(comparison.completion_ids):
            continue  # a verdict about other completions than the comparison's: never stored
        confidence = float(verdict["confidence"])
        judgment = Judgment(comparison_id=comparison.id, project_id=project.id, rater_id=None, assignment_id=None,
                            ranking=ranking, source="ai", guideline_version=project.guideline_version,
                            top_completion_id=ranking[0][0] if len(ranking[0]) == 1 else None,
                            rationale=f"AI judge {judge.name} ({judge.method}), confidence {confidence:.3f}")  # fmt: skip
        db.add(judgment)
        db.flush()
        firsts = verdict.get("p_first") or []
        row = AIVerdict(judgment_id=judgment.id, comparison_id=comparison.id, project_id=project.id, judge_id=judge.id,
                        job_id=job.id, model_version_id=judge.model_version_id, method=judge.method,
                        template_version=version, confidence=confidence,
                        p_first=(sum(firsts) / len(firsts)) if firsts else None,
                        detail={"ranking": ranking} | {k: verdict.get(k) for k in ("pairs", "strengths", "p_first", "passed", "attributes", "prm")
                                                       if k in verdict})  # fmt: skip
        db.add(row)
        existing.add(comparison.id)
        stored += 1
        if not comparison.is_gold:
            actable.append((row, comparison.id, confidence))
    db.flush()
    # The gate looks at the sample with these verdicts in it before the policy acts on any of them.
    if acts and enforce_gate(db, project, policy, judge):
        for row, comparison_id, confidence in actable:
            if confidence >= policy.threshold:
                row.counted = count_vote(db, comparison_id, policy.policy)
                counted += row.counted
            elif policy.policy == "route":
                route_to_humans(db, comparison_id, confidence)
                routed_to_humans += 1
        db.flush()
    return {"stored": stored, "counted": counted, "routed_to_humans": routed_to_humans,
            "judge_id": judge.id, "template_version": version}  # fmt: skip


def count_vote(db: Session, comparison_id: int, policy: str) -> bool:
    """A confident AI verdict counted, in one guarded UPDATE (so a live lease or a concurrent submit is never
    overtaken): prelabel adds it as one of the votes still wanted; route completes the comparison (its required
    total becomes what it has now plus this vote). Never when no slot is free: a comparison never gets more votes
    than it requires."""
    free = Comparison.n_judgments + Comparison.n_leases < Comparison.required
    values = {"n_judgments": Comparison.n_judgments + 1}
    if policy == "route":
        values["required"] = Comparison.n_judgments + Comparison.n_leases + 1
    result = db.execute(update(Comparison).where(Comparison.id == comparison_id, free).values(**values)
                        .execution_options(synchronize_session=False))  # fmt: skip
    return result.rowcount == 1


def route_to_humans(db: Session, comparison_id: int, confidence: float) -> None:
    """An uncertain comparison goes to humans first, the most uncertain first: the queue sorts by score_gap
    ascending after priority, and unscored comparisons sort last; 2 * confidence - 1 is 0 for a coin flip."""
    db.execute(update(Comparison).where(Comparison.id == comparison_id)
               .values(score_gap=max(0.0, 2 * confidence - 1)).execution_options(synchronize_session=False))  # fmt: skip


def _top(detail: dict | None) -> int | None:
    """The judge's own top choice (ai_verdict.detail["ranking"]'s first group when it holds one id; None: a tie)."""
    ranking = (detail or {}).get("ranking") or [[None, None]]
    return ranking[0][0] if len(ranking[0]) == 1 else None


# --- the review queue: raters confirm or flip AI labels (the only place a rater sees one) ---------------------------


def unreviewed_query(project: Project) -> Select:
    """AI labels nobody has reviewed yet, those the policy counted first, least confident first."""
    return (select(AIVerdict).where(AIVerdict.project_id == project.id, AIVerdict.reviewed.is_(None))
            .order_by(AIVerdict.counted.desc(), AIVerdict.confidence, AIVerdict.id))  # fmt: skip


def review_queue(db: Session, project: Project, rater: User, limit: int = 20,
                 rows: Sequence[AIVerdict] | None = None) -> list[dict]:  # fmt: skip
    """The first `limit` unreviewed AI labels (or these `rows` of them) with their prompts and options. Reviewing
    is explicitly looking at the AI's label, so a review is recorded as a review (confirmed or flipped), never as
    an independent human judgment."""
    if rows is None:
        rows = list(db.scalars(unreviewed_query(project).limit(limit)))
    comparisons = {c.id: c for c in db.scalars(select(Comparison).where(Comparison.id.in_({r.comparison_id for r in rows})))}
    prompts = {p.id: p for p in db.scalars(select(Prompt).where(Prompt.id.in_({c.prompt_id for c in comparisons.values()})))}
    texts = dict(db.execute(select(Completion.id, Completion.text).where(
        Completion.id.in_({i for c in comparisons.values() for i in c.completion_ids}))).all())  # fmt: skip
    out = []
    for row in rows:
        comparison = comparisons[row.comparison_id]
        prompt = prompts[comparison.prompt_id]
        out.append({"id": row.id, "comparison_id": row.comparison_id, "prompt": prompt.messages[-1]["content"],
                    "options": [{"id": i, "text": texts.get(i, "")} for i in comparison.completion_ids],
                    "ai_ranking": (row.detail or {}).get("ranking"), "confidence": row.confidence,
                    "counted": row.counted})  # fmt: skip
    return out


def review_verdict(db: Session, project: Project, verdict_id: int, decision: str, actor: User) -> AIVerdict:
    """confirm: the AI label stands, reviewed. flip: the AI judgment's ranking is reversed (exports that include AI
    judgments then carry the reviewer's correction); the judge's own verdict stays in ai_verdict.detail, so its
    agreement figures keep measuring the judge, not the reviewer."""
    row = get_or_404(db, AIVerdict, verdict_id, "AI verdict", project=project)
    if decision not in ("confirm", "flip"):
        raise Unprocessable("decision must be confirm or flip.")
    if row.reviewed is not None:
        raise Unprocessable(f"AI verdict {verdict_id} was reviewed already ({row.reviewed}).")
    judgment = db.get(Judgment, row.judgment_id)
    if decision == "flip":
        if len(judgment.ranking) < 2:
            raise Unprocessable("The AI called it a tie: there is no order to flip.")
        judgment.ranking = list(reversed(judgment.ranking))
        judgment.top_completion_id = judgment.ranking[0][0] if len(judgment.ranking[0]) == 1 else None
    row.reviewed = "confirmed" if decision == "confirm" else "flipped"
    row.detail = dict(row.detail or {}) | {"review": {"by": actor.id, "decision": row.reviewed}}
    audit(db, actor, "ai_verdict.review", "ai_verdict", row.id, decision=row.reviewed)
    return row


# --- agreement with the humans ----------------------------------------------------------------------------------


def cohen_kappa(a, b) -> float | None:
    """Cohen's kappa of two codings of the same items (nominal); None when undefined (no item, or chance 1)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) == 0:
        return None
    observed = float(np.mean(a == b))
    categories = np.union1d(a, b)
    expected = float(sum(np.mean(a == c) * np.mean(b == c) for c in categories))
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def _majority(codes: list[float]) -> float | None:
    """The modal code of a comparison's human verdicts; None when two codes tie for the most votes."""
    counts = Counter(codes).most_common()
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return None
    return counts[0][0]


def calibration(confidence: np.ndarray, correct: np.ndarray) -> tuple[list[dict], float | None]:
    """Confidence bins (0.5-0.6, ..., 0.9-1.0; the last closed) against observed accuracy, and the expected
    calibration error: sum over bins of (bin share) x |accuracy - mean confidence|."""
    bins, ece = [], 0.0
    edges = CALIBRATION_BINS
    for low, high in zip(edges, edges[1:], strict=False):
        inside = (confidence >= low) & ((confidence < high) | ((high == edges[-1]) & (confidence <= high)))
        n = int(inside.sum())
        if n == 0:
            bins.append({"low": low, "high": high, "n": 0, "confidence": None, "accuracy": None})
            continue
        conf, acc = float(confidence[inside].mean()), float(correct[inside].mean())
        ece += n / len(confidence) * abs(acc - conf)
        bins.append({"low": low, "high": high, "n": n, "confidence": conf, "accuracy": acc})
    return bins, (ece if len(confidence) else None)


def threshold_table(confidence: np.ndarray, correct: np.ndarray) -> list[dict]:
    """At threshold t: the share of verdicts at or above it (what the policy would auto-label), their accuracy."""
    rows = []
    for t in THRESHOLDS:
        above = confidence >= t
        n = int(above.sum())
        rows.append({"threshold": t, "share": (n / len(confidence)) if len(confidence) else None,
                     "n": n, "accuracy": float(correct[above].mean()) if n else None})  # fmt: skip
    return rows


def threshold_for(confidence: np.ndarray, correct: np.ndarray, target: float = 0.95) -> dict | None:
    """The lowest threshold (one of the verdicts' confidences) whose auto-labeled share is accurate to `target`."""
    if not len(confidence):
        return None
    order = np.argsort(-confidence, kind="stable")
    ordered = confidence[order]
    hits = np.cumsum(correct[order])
    ends = np.nonzero(np.r_[ordered[1:] != ordered[:-1], True])[0]  # a threshold takes every verdict of its value
    accuracy = hits[ends] / (ends + 1)
    ok = np.nonzero(accuracy >= target)[0]
    if not len(ok):
        return {"target": target, "threshold": None, "share": 0.0, "accuracy": None}
    end = int(ends[ok[-1]])
    return {"target": target, "threshold": float(ordered[end]), "share": (end + 1) / len(order),
            "accuracy": float(hits[end] / (end + 1))}  # fmt: skip


def judge_agreement(db: Session, project: Project) -> list[dict]:
    """Per judge and template version: how its verdicts agree with the humans' on comparisons both judged.

    Verdicts are coded by `top_choice_codes` (the winner's position in the comparison's stored option order, a tie
    its own category), the coding quality uses, so kappa and alpha mean the same as the raters' figures.
    accuracy: share of verdicts equal to the human majority (comparisons whose humans tie for the most votes are
    left out); kappa: Cohen's kappa of the judge against that majority; alpha: Krippendorff's alpha of the humans
    with the judge as one more coder, beside alpha_humans (the humans alone on the same comparisons);
    calibration and ECE: confidence against being right about the majority; position_bias: mean probability the
    judge preferred the first response shown (0.5 is unbiased; generative judges only); flip_rate and
    tie_aware_accuracy: the judge gate's figures on the compared verdicts (app.judges.gates). The humans are the counted
    human judgments (app.judgments.selections): excluded and voided ones are no reference."""
    rows = db.execute(select(AIVerdict.judge_id, AIVerdict.template_version, AIVerdict.comparison_id,
                             AIVerdict.confidence, AIVerdict.p_first, AIVerdict.counted, AIVerdict.reviewed,
                             AIVerdict.detail).where(AIVerdict.project_id == project.id)).all()  # fmt: skip
    rows = [SimpleNamespace(**row._mapping, top_completion_id=_top(row.detail)) for row in rows]
    judged = select(AIVerdict.comparison_id).where(AIVerdict.project_id == project.id)
    human = db.execute(select(Judgment.comparison_id, Judgment.rater_id, Judgment.top_completion_id)
                       .where(counted(HUMAN, project_id=project.id),
                              Judgment.comparison_id.in_(judged))).all()  # fmt: skip  # only what a judge judged
    unit_ids = sorted({r.comparison_id for r in rows} | {h.comparison_id for h in human})
    options = dict(db.execute(select(Comparison.id, Comparison.completion_ids)
                              .where(Comparison.id.in_(unit_ids))).all()) if unit_ids else {}  # fmt: skip
    width = max((len(o) for o in options.values()), default=2)

    def codes(pairs) -> list[float]:
        """top_choice_codes of (comparison_id, top_completion_id) pairs."""
        if not pairs:
            return []
        top = [np.nan if t is None else float(t) for _c, t in pairs]
        grid = np.full((len(pairs), width), np.nan)
        for i, (c, _t) in enumerate(pairs):
            grid[i, : len(options[c])] = options[c]
        return list(top_choice_codes(top, grid))

    human_attributes = human_attribute_tops(db, project)
    human_codes = codes([(h.comparison_id, h.top_completion_id) for h in human])
    by_unit: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for h, code in zip(human, human_codes, strict=True):
        by_unit[h.comparison_id].append((h.rater_id if h.rater_id is not None else -1, code))
    majority = {c: _majority([code for _r, code in votes]) for c, votes in by_unit.items()}

    groups: dict[tuple[int, int], list] = defaultdict(list)
    for row in rows:
        groups[(row.judge_id, row.template_version)].append(row)
    judges = {j.id: j for j in list_judges(db, project)}
    names = dict(db.execute(select(ModelVersion.id, ModelVersion.name)).all())
    out = []
    for (judge_id, version), items in sorted(groups.items()):
        judge = judges.get(judge_id)
        ai_codes = codes([(r.comparison_id, r.top_completion_id) for r in items])
        paired = [(r, code) for r, code in zip(items, ai_codes, strict=True)
                  if majority.get(r.comparison_id) is not None]  # fmt: skip
        confidence = np.array([r.confidence for r, _ in paired], dtype=np.float64)
        correct = np.array([code == majority[r.comparison_id] for r, code in paired], dtype=np.float64)
        bins, ece = calibration(confidence, correct)
        # alpha: long format over the comparisons the judge judged and humans did too
        units, raters, values, h_units, h_raters, h_values = [], [], [], [], [], []
        for r, code in zip(items, ai_codes, strict=True):
            if r.comparison_id not in by_unit:
                continue
            units.append(r.comparison_id), raters.append(-1_000_000 - judge_id), values.append(code)
            for rater, human_code in by_unit[r.comparison_id]:
                for target in ((units, raters, values), (h_units, h_raters, h_values)):
                    target[0].append(r.comparison_id), target[1].append(rater), target[2].append(human_code)
        with_judge = krippendorff_alpha(units, raters, values) if units else None
        humans_only = krippendorff_alpha(h_units, h_raters, h_values) if h_units else None
        firsts = [r.p_first for r in items if r.p_first is not None]
        flips = [f for f in (gates.flipped((r.detail or {}).get("p_first")) for r, _ in paired) if f is not None]
        tie_aware = [gates.tie_aware_score(code, majority[r.comparison_id]) for r, code in paired]
        out.append({
            "judge_id": judge_id, "judge": judge.name if judge else None, "method": judge.method if judge else None,
            "model_version_id": judge.model_version_id if judge else None,
            "model_name": names.get(judge.model_version_id) if judge else None,
            "template_version": version, "verdicts": len(items), "counted": sum(bool(r.counted) for r in items),
            "compared": len(paired),
            "accuracy": float(correct.mean()) if len(paired) else None,
            "kappa": cohen_kappa([c for _r, c in paired], [majority[r.comparison_id] for r, _c in paired]),
            "alpha": with_judge.alpha if with_judge else None,
            "alpha_humans": humans_only.alpha if humans_only else None,
            "mean_confidence": float(np.mean([r.confidence for r in items])) if items else None,
            "ece": ece, "calibration": bins,
            "position_bias": (sum(firsts) / len(firsts)) if firsts else None,
            "flip_rate": (sum(flips) / len(flips)) if flips else None, "flips_checked": len(flips),
            "tie_aware_accuracy": (sum(tie_aware) / len(tie_aware)) if tie_aware else None,
            "ties": sum(c == TIE_CODE for c in ai_codes),
            "reviewed": sum(r.reviewed is not None for r in items),
            "flipped": sum(r.reviewed == "flipped" for r in items),
            "attributes": attribute_agreement(items, human_attributes),
            "thresholds": threshold_table(confidence, correct),
            "threshold_for_95": threshold_for(confidence, correct, 0.95),
        })  # fmt: skip
    return json.loads(json.dumps(out, default=lambda value: value.item()))  # numpy scalars as plain numbers


def human_attribute_tops(db: Session, project: Project) -> dict[str, dict[int, int | None]]:
    """{attribute: {comparison id: the option with the highest mean human score on it (None: a tie)}}, over the
    counted human judgments that scored it (what rubric verdicts are measured against)."""
    if not project.attributes:
        return {}
    sums: dict[str, dict[int, dict[str, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for comparison_id, attributes in db.execute(select(Judgment.comparison_id, Judgment.attributes)
                                                .where(counted(HUMAN, project_id=project.id))):  # fmt: skip
        for name, scores in (attributes or {}).items():
            for option, score in scores.items():
                sums[name][comparison_id][option].append(float(score))
    tops: dict[str, dict[int, int | None]] = {}
    for name, by_comparison in sums.items():
        for comparison_id, by_option in by_comparison.items():
            means = {int(o): sum(v) / len(v) for o, v in by_option.items()}
            best = max(means.values())
            leaders = [o for o, m in means.items() if m == best]
            tops.setdefault(name, {})[comparison_id] = leaders[0] if len(leaders) == 1 and len(means) > 1 else None
    return tops


def attribute_agreement(items: list, human_tops: dict[str, dict[int, int | None]]) -> dict[str, dict]:
    """Per attribute of a rubric judge's verdicts: verdicts, abstentions, and on the comparisons whose humans
    scored it with one best option, how often the judge's best on it is that option (accuracy)."""
    out: dict[str, dict] = {}
    for row in items:
        for name, verdict in ((row.detail or {}).get("attributes") or {}).items():
            figure = out.setdefault(name, {"verdicts": 0, "abstentions": 0, "compared": 0, "correct": 0})
            if "abstained" in verdict:
                figure["abstentions"] += 1
                continue
            figure["verdicts"] += 1
            human = human_tops.get(name, {}).get(row.comparison_id)
            if human is not None:
                top = verdict["ranking"][0]
                figure["compared"] += 1
                figure["correct"] += len(top) == 1 and int(top[0]) == human
    for figure in out.values():
        correct = figure.pop("correct")
        figure["accuracy"] = correct / figure["compared"] if figure["compared"] else None
    return out


def judges_json(db: Session, project: Project) -> dict:
    figures = judge_agreement(db, project)
    judges = []
    for judge in list_judges(db, project):
        version = db.get(ModelVersion, judge.model_version_id) if judge.model_version_id else None
        judges.append({"id": judge.id, "name": judge.name, "method": judge.method, "active": judge.active,
                       "model_version_id": judge.model_version_id, "model_name": version.name if version else None,
                       "params": judge.params, "created_at": judge.created_at.isoformat(),
                       "agreement": [f for f in figures if f["judge_id"] == judge.id]})  # fmt: skip
    return {"project_id": project.id, **policy_json(db, project), "judges": judges}
