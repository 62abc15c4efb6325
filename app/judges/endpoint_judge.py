"""A generative judge whose model is an endpoint: the worker asks the server over HTTP (no trainer child, no torch).

The same question as a local generative judge (the project's versioned template, trainer.verdicts.fill_template),
every pair of every comparison asked in both orders, and the same arithmetic from P(first shown wins) to a ranking
and a confidence (trainer.verdicts.verdicts_from_orders), stored by the same store_verdicts: every judge figure
(accuracy against the human majority, kappa, calibration, position bias) reads these verdicts unchanged.

- The verdict: JSON ({"verdict": label}, with response_format) where the endpoint supports it (json_output), else
  the answer must be one of the labels, alone or after "Answer:" (parse_verdict). Anything else is an abstention:
  recorded (result `abstentions`, metric judge/abstentions), never a guess; a comparison with an abstention on any
  order gets no verdict.
- P(first): from the returned log-probabilities of the two labels when the server gives them; else the agreement of
  `samples` answers (temperature 1); one greedy answer gives 0 or 1.
- Rubric judging (param `rubric`): each pair is also asked, in both orders, which response is better on each of
  the project's attribute scales (rubric_template, with {attribute}); each attribute gets its own verdict (ranking,
  confidence, P(first)) in the AI verdict's detail `attributes`, or an abstention with its reason when an answer on
  it cannot be parsed (the overall verdict stands; an attribute is never guessed).
- Cache: each answer is kept by (model version, sha256 of the exact question, settings) in judge_answer_cache, so
  the same prompt, pair, order and template version is never paid for twice (a retried job, a second judge on the
  same endpoint, an overlapping comparison).
- Tokens and cost: summed per job (judge/prompt_tokens, judge/completion_tokens, judge/cost) and per 1,000
  judgments (judge/tokens_per_1000, judge/cost_per_1000); judge_usage sums them per judge for the judges page.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from itertools import combinations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import get_settings
from app.db import session_scope
from app.errors import JobFailed
from app.jobs.runner import JobContext
from app.judges.handlers import run_judge_job
from app.judges.service import store_verdicts, trainer_params, write_judge_inputs
from app.models import Job, JobKind, Judge, JudgeAnswerCache, ModelVersion, Project
from app.registry.endpoint_client import Cancelled, EndpointClient, EndpointConfig, EndpointFailure
from app.registry.endpoints import check_address, endpoint_config, is_endpoint
from trainer.params import DEFAULTS, JudgeArgs, parse_params
from trainer.verdicts import _prompt_text, fill_template, response_text, verdicts_from_orders

REPORTED_ABSTENTIONS = 100
ANSWER_CHARS = 200
JSON_INSTRUCTION = 'Reply with JSON only: {"verdict": "<label>"}, where <label> is one of: %s.'


def parse_verdict(text: str, labels: list[str]) -> int | None:
    """0 (the first label), 1 (the second) or None (unparseable). Accepted: a JSON object whose "verdict" (or
    "answer", "winner") is a label; or the label alone, optionally quoted, bracketed or bold, optionally after
    "Answer:", "Verdict:" or "Response", optionally with a full stop. Nothing else: no searching prose for a letter."""
    text = (text or "").strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            return None
        if not isinstance(value, dict):
            return None
        choice = next((value[k] for k in ("verdict", "answer", "winner") if isinstance(value.get(k), str)), None)
        return labels.index(choice.strip()) if choice is not None and choice.strip() in labels else None
    alternatives = "|".join(re.escape(label) for label in labels)
    match = re.fullmatch(r"(?:(?i:answer|verdict|response|the better response is)\s*[:\-]?\s*)?[\"'*(\[]*\s*("
                         + alternatives + r")\s*[\"'*)\]]*\.?", text)  # fmt: skip
    return labels.index(match.group(1)) if match else None


def first_probability_from_logprobs(logprobs: list | None, labels: list[str]) -> float | None:
    """P(first label) / (P(first) + P(second)) at the first answer token that is a label; None without logprobs."""
    for token in logprobs or []:
        if not isinstance(token, dict) or str(token.get("token", "")).strip(" \"'*") not in labels:
            continue
        mass = [0.0, 0.0]
        for top in token.get("top_logprobs") or [token]:
            name = str(top.get("token", "")).strip(" \"'*")
            if name in labels and isinstance(top.get("logprob"), (int, float)):
                mass[labels.index(name)] += math.exp(top["logprob"])
        total = sum(mass)
        return mass[0] / total if total > 0 else None
    return None


def settings_key(args: JudgeArgs, config: EndpointConfig) -> str:
    settings = {"labels": list(args.labels), "samples": args.samples, "json": config.json_output,
                "max_tokens": args.max_answer_tokens, "model": config.model}  # fmt: skip
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def question_key(question: str) -> str:
    return hashlib.sha256(question.encode("utf-8")).hexdigest()


def ask_question(client: EndpointClient, question: str, args: JudgeArgs) -> tuple[float | None, dict]:
    """P(first shown wins) for one question (None: every answer unparseable) and what to keep of the answers."""
    labels = list(args.labels)
    messages = [{"role": "user", "content": question}]
    params = {"max_tokens": args.max_answer_tokens, "temperature": 0.0 if args.samples == 1 else 1.0,
              "logprobs": True, "top_logprobs": 5}  # fmt: skip
    if client.config.json_output:
        messages = [{"role": "system", "content": JSON_INSTRUCTION % ", ".join(labels)}] + messages
        params["response_format"] = {"type": "json_schema", "json_schema": {"name": "verdict", "strict": True, "schema": {
            "type": "object", "properties": {"verdict": {"type": "string", "enum": labels}},
            "required": ["verdict"], "additionalProperties": False}}}  # fmt: skip
    texts, choices, usage = [], [], {"prompt_tokens": 0, "completion_tokens": 0, "answers_without_usage": 0}
    source = "samples"
    for sample in range(args.samples):
        answer = client.chat(messages, params)
        texts.append(answer.text[:ANSWER_CHARS])
        for key in ("prompt_tokens", "completion_tokens"):
            usage[key] += (answer.usage or {}).get(key) or 0
        usage["answers_without_usage"] += answer.usage is None
        choice = parse_verdict(answer.text, labels)
        if sample == 0 and choice is not None:
            p = first_probability_from_logprobs(answer.logprobs, labels)
            if p is not None:
                return p, {"texts": texts, "source": "logprobs", "usage": usage}
        choices.append(choice)
    parsed = [c for c in choices if c is not None]
    p = (sum(1 for c in parsed if c == 0) / len(parsed)) if parsed else None
    return p, {"texts": texts, "source": source, "parsed": len(parsed), "usage": usage}


def rubric_attributes(project: Project) -> list[tuple[str, str]]:
    """(name, label) of each attribute scale of the project, what rubric judging asks about."""
    scales = [(a["name"], a.get("label") or a["name"].replace("_", " ")) for a in project.attributes or []]
    if not scales:
        raise JobFailed(f"Rubric judging asks per attribute, and project {project.slug} has no attribute scales.")
    return scales


def verdicts_of(rows: list[dict], asks: list[tuple], keys: list[str], answers: dict, failures: dict,
                attribute: str | None) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """The verdicts on `attribute` (None: the overall question) of the rows whose every question on it was answered
    and parsed, and an abstention with its first reason for each other row."""
    judged_rows, judged_asks, probs, abstentions = [], [], [], []
    by_row: dict[int, list[int]] = {}
    for i, (r, _first, _second, about) in enumerate(asks):
        if about == attribute:
            by_row.setdefault(r, []).append(i)
    for r, row in enumerate(rows):
        reasons = []
        for i in by_row.get(r, []):
            key = keys[i]
            if key in failures:
                reasons.append(f"request failed: {failures[key]}")
            elif answers[key][0] is None:
                reasons.append(f"unparseable answer: {(answers[key][1].get('texts') or [''])[0]!r}")
        if reasons:
            abstentions.append({"comparison_id": row["comparison_id"], "reason": reasons[0]})
            continue
        index = len(judged_rows)
        judged_rows.append(row)
        for i in by_row.get(r, []):
            judged_asks.append((index, asks[i][1], asks[i][2]))
            probs.append(answers[keys[i]][0])
    verdicts = verdicts_from_orders(judged_rows, judged_asks, probs)
    for verdict in verdicts:
        verdict["strengths"] = {str(k): v for k, v in verdict["strengths"].items()}
    return verdicts, abstentions


def judge_usage(db: Session, project: Project) -> dict[int, dict]:
    """Per judge: tokens, cost and seconds per 1,000 judgments over its endpoint judge jobs (the judges page)."""
    totals: dict[int, dict] = {}
    jobs = db.scalars(select(Job).where(Job.project_id == project.id, Job.kind == JobKind.judge, Job.status == "succeeded"))
    for job in jobs:
        metrics = (job.result or {}).get("metrics") or {}
        if metrics.get("judge/backend") != "endpoint":
            continue
        row = totals.setdefault(int(job.params.get("judge")), {"judgments": 0, "tokens": 0, "cost": None, "seconds": 0.0,
                                                                "questions_asked": 0, "questions_cached": 0})  # fmt: skip
        row["judgments"] += metrics.get("judge/comparisons") or 0
        row["tokens"] += (metrics.get("judge/prompt_tokens") or 0) + (metrics.get("judge/completion_tokens") or 0)
        row["seconds"] += metrics.get("judge/runtime_s") or 0.0
        row["questions_asked"] += metrics.get("judge/questions_asked") or 0
        row["questions_cached"] += metrics.get("judge/questions_cached") or 0
        if metrics.get("judge/cost") is not None:
            row["cost"] = (row["cost"] or 0.0) + metrics["judge/cost"]
    for row in totals.values():
        n = row["judgments"]
        row["tokens_per_1000"] = 1000 * row["tokens"] / n if n else None
        row["cost_per_1000"] = 1000 * row["cost"] / n if n and row["cost"] is not None else None
        row["seconds_per_1000"] = 1000 * row["seconds"] / n if n else None
    return totals


def run_any_judge_job(ctx: JobContext) -> dict:
    """The worker's handler of `judge`: a generative judge on an endpoint is asked over HTTP here; every other judge
    runs in the trainer child (app.judges.handlers.run_judge_job)."""
    with session_scope() as db:
        job = db.get(Job, ctx.job_id)
        judge = db.get(Judge, int(job.params["judge"])) if (job.params or {}).get("judge") else None
        version = db.get(ModelVersion, judge.model_version_id) if judge and judge.model_version_id else None
        served = judge is not None and judge.method == "generative" and is_endpoint(db, version)
    return run_endpoint_judge(ctx) if served else run_judge_job(ctx)


def run_endpoint_judge(ctx: JobContext) -> dict:
    work = get_settings().data_dir.resolve() / "jobs" / str(ctx.job_id)
    work.mkdir(parents=True, exist_ok=True)
    inputs = work / "comparisons.jsonl"
    with session_scope() as db:
        job = db.get(Job, ctx.job_id)
        judge, params, template_version, _body = trainer_params(db, job)
        try:
            args: JudgeArgs = parse_params(JobKind.judge, DEFAULTS[JobKind.judge] | params)
        except ValueError as error:
            raise JobFailed(f"The judge job's params are not valid: {error}") from error
        version = db.get(ModelVersion, judge.model_version_id)
        config = endpoint_config(db, version)
        rubric = rubric_attributes(db.get(Project, job.project_id)) if args.rubric else []
        version_id = version.id
        count = write_judge_inputs(db, job, inputs)
    if count == 0:
        ctx.log("Nothing to judge: every comparison in scope already has this judge's verdict.\n")
        result = {"metrics": {"judge/comparisons": 0, "judge/backend": "endpoint"}, "stored": 0, "counted": 0,
                  "routed_to_humans": 0, "judge_id": judge.id, "abstentions": []}  # fmt: skip
        with session_scope(write=True) as db:
            db.get(Job, ctx.job_id).result = result
        return result
    if len(args.labels) != 2:
        raise JobFailed(f"A generative judge needs two answer labels, got {args.labels}.")
    check_address(config.base_url)
    with open(inputs, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]

    asks: list[tuple[int, int, int, str | None]] = []  # (row index, first shown, second shown, attribute or None)
    questions: list[str] = []
    for r, row in enumerate(rows):
        texts = {c["completion_id"]: response_text(c["text"], c.get("messages")) for c in row["completions"]}
        for a, b in combinations(sorted(texts), 2):
            for first, second in ((a, b), (b, a)) if args.both_orders else ((a, b),):
                for attribute, label in [(None, None), *rubric]:
                    asks.append((r, first, second, attribute))
                    questions.append(fill_template(args.rubric_template if attribute else args.template,
                                                   guidelines=row.get("guidelines") or "",
                                                   prompt=_prompt_text(row["prompt"]), response_a=texts[first],
                                                   response_b=texts[second], attribute=label))  # fmt: skip
    settings = settings_key(args, config)
    keys = [question_key(q) for q in questions]
    unique = dict(zip(keys, questions, strict=True))
    answers: dict[str, tuple[float | None, dict]] = {}
    with session_scope() as db:
        for row in db.scalars(select(JudgeAnswerCache).where(JudgeAnswerCache.model_version_id == version_id,
                                                             JudgeAnswerCache.settings == settings,
                                                             JudgeAnswerCache.question_sha256.in_(list(unique)))):  # fmt: skip
            answers[row.question_sha256] = (row.p_first, row.answer)
    cached = len(answers)
    missing = [k for k in unique if k not in answers]
    ctx.progress(0.02, f"judging {count} comparisons: {len(missing)} questions to ask {config.name}, {cached} cached")
    failures: dict[str, str] = {}
    started = time.monotonic()

    def keep(fresh: list[tuple[str, float | None, dict]]) -> None:
        """Cache the answers as they come (a crash loses none of them)."""
        if not fresh:
            return
        with session_scope(write=True) as db:
            for key, p, answer in fresh:
                db.add(JudgeAnswerCache(model_version_id=version_id, question_sha256=key, settings=settings, p_first=p,
                                        answer=answer))  # fmt: skip

    with EndpointClient(config, cancel=ctx.cancel_event) as client:
        pool = ThreadPoolExecutor(max_workers=max(1, min(config.max_concurrency, len(missing) or 1)),
                                  thread_name_prefix=f"judge-{ctx.job_id}")  # fmt: skip
        try:
            futures = {pool.submit(ask_question, client, unique[k], args): k for k in missing}
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                fresh = []
                for future in finished:
                    key = futures[future]
                    try:
                        p, answer = future.result()
                    except EndpointFailure as failure:
                        failures[key] = failure.reason
                        continue
                    answers[key] = (p, answer)
                    fresh.append((key, p, answer))
                keep(fresh)
                if finished:
                    ctx.progress(0.02 + 0.9 * (len(answers) + len(failures)) / max(len(unique), 1),
                                 f"{len(answers) - cached}/{len(missing)} questions answered")  # fmt: skip
        except Cancelled:
            ctx.check_cancelled()
            raise
        except BaseException:
            ctx.cancel_event.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    elapsed = time.monotonic() - started
    if missing and len(failures) == len(missing):
        raise JobFailed(f"The endpoint {config.name} answered no question: {next(iter(failures.values()))}")

    verdicts, abstentions = verdicts_of(rows, asks, keys, answers, failures, None)
    attribute_abstentions = 0
    if rubric:
        by_comparison = {v["comparison_id"]: v for v in verdicts}
        for attribute, _label in rubric:
            judged, skipped = verdicts_of(rows, asks, keys, answers, failures, attribute)
            for verdict in judged:
                if verdict["comparison_id"] in by_comparison:
                    by_comparison[verdict["comparison_id"]].setdefault("attributes", {})[attribute] = {
                        k: verdict[k] for k in ("ranking", "confidence", "p_first")}  # fmt: skip
            for skip in skipped:
                if skip["comparison_id"] in by_comparison:
                    by_comparison[skip["comparison_id"]].setdefault("attributes", {})[attribute] = {
                        "abstained": skip["reason"]}  # fmt: skip
                    attribute_abstentions += 1

    paid = [answers[k][1].get("usage") or {} for k in missing if k in answers]
    prompt_tokens = sum(u.get("prompt_tokens") or 0 for u in paid)
    completion_tokens = sum(u.get("completion_tokens") or 0 for u in paid)
    cost = config.cost({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens})
    firsts = [p for v in verdicts for p in v.get("p_first") or []]
    n = len(verdicts)
    metrics = {
        "judge/comparisons": n, "judge/abstentions": len(abstentions), "judge/questions": len(unique),
        "judge/questions_asked": len(missing) - len(failures), "judge/questions_cached": cached,
        "judge/failed_questions": len(failures),
        "judge/attribute_verdicts": sum(1 for v in verdicts for a in (v.get("attributes") or {}).values()
                                        if "abstained" not in a) if rubric else None,
        "judge/attribute_abstentions": attribute_abstentions if rubric else None,
        "judge/mean_confidence": (sum(v["confidence"] for v in verdicts) / n) if n else None,
        "judge/prompt_tokens": prompt_tokens, "judge/completion_tokens": completion_tokens,
        "judge/tokens_per_1000": round(1000 * (prompt_tokens + completion_tokens) / n, 1) if n else None,
        "judge/runtime_s": round(elapsed, 3),
        "judge/seconds_per_1000": round(1000 * elapsed / n, 3) if n else None,
        "judge/position_bias": (sum(firsts) / len(firsts)) if firsts else None,
        "judge/backend": "endpoint",
    }  # fmt: skip
    if cost is not None:
        metrics["judge/cost"] = round(cost, 6)
        metrics["judge/cost_per_1000"] = round(1000 * cost / n, 6) if n else None
    ctx.metrics(1, {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    with session_scope(write=True) as db:
        job = db.get(Job, ctx.job_id)
        result = {"metrics": metrics} | store_verdicts(db, job, verdicts) | {
            "abstentions": abstentions[:REPORTED_ABSTENTIONS], "template_version": template_version}  # fmt: skip
        job.result = result  # with the verdicts, in one transaction: a retry finds them stored
    return result
