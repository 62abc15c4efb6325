"""The `verify` job: verdicts on a policy version's answers (or on existing answers) and their pass rates.

    run_verify_job(ctx) -> {"metrics": {pass@1, pass@k, ...}, "pass_rates", "verdicts", "model_version_id"?}

With a policy version: a `generate` trainer child (app.jobs.trainer_child.run_trainer, `launcher: accelerate`
too) samples `samples` answers for each
held-out verifiable prompt; they are stored as the version's completions (no comparisons). Without one: the
project's answers to those prompts that have no verdict yet. Then a second child, `python -m
trainer.rewards.verifier`, checks every answer (rules in that child, code tests each in the sandbox), so no
untrusted code ever runs in the worker. The verdicts and the job's result are written in one transaction.
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from app.config import get_settings
from app.db import session_scope
from app.errors import JobFailed
from app.jobs.child import ROOT, python_executable, run_child
from app.jobs.runner import JobContext
from app.jobs.trainer_child import finished_result, job_dir, run_trainer
from app.limits import clean_model_output
from app.models import Completion, Job, JobKind, ModelVersion, Project, Prompt, Verdict
from app.store import local_path
from app.verifiers.service import eval_prompt_ids, job_pass_rates, samples_per_prompt
from trainer.params import DEFAULTS
from trainer.results import GenerationsResult, read_jsonl
from trainer.rewards.sandbox import HIDE_ENV
from trainer.spec import JobSpec


def sandbox_env() -> dict[str, str]:
    """What the verifier child passes on to the sandbox: the paths it must not see (artifact store, source)."""
    hidden = [str(get_settings().data_dir.resolve()), str(ROOT)]
    return {HIDE_ENV: ":".join(hidden)}


def _generate(ctx: JobContext, work: Path, version_path: str, prompts: list[dict], params: dict) -> list[dict]:
    out = work / "generations"
    result = finished_result(out, ctx.job_id)  # a retry reuses what an earlier attempt generated
    if result is None:
        prompts_path = work / "prompts.jsonl"
        with open(prompts_path, "w", encoding="utf-8") as handle:
            for row in prompts:
                handle.write(json.dumps(row) + "\n")
        gen = {"num_completions": samples_per_prompt(params), "temperature": float(params.get("temperature", 0.8)),
               "max_new_tokens": int(params.get("max_new_tokens", 128))}  # fmt: skip
        spec = JobSpec(kind=JobKind.generate, job_id=ctx.job_id, base_model=version_path, prompts_path=str(prompts_path),
                       output_dir=str(out), params=DEFAULTS[JobKind.generate] | gen, seed=int(params.get("seed", 0) or 0),
                       launcher=params.get("launcher", "python"))  # fmt: skip
        ctx.progress(0.02, "sampling answers")
        result = run_trainer(ctx, spec, work, params.get("accelerate_config"))
    if not isinstance(result, GenerationsResult):
        raise JobFailed(f"The sampling child wrote {result.output}, not generations.")
    return result.read_generations()


def _version_from_dependency(ctx: JobContext) -> None:
    """params.base_model_from: the model version that job registered (a round's new policy) is the one verified."""
    with session_scope(write=True) as db:
        job = db.get(Job, ctx.job_id)
        source_id = (job.params or {}).get("base_model_from")
        if source_id is None:
            return
        source = db.get(Job, int(source_id))
        version_id = (source.result or {}).get("model_version_id") if source else None
        if version_id is None:
            raise JobFailed(f"base_model_from: job {source_id} registered no model version.")
        job.base_model_id = int(version_id)


def run_verify_job(ctx: JobContext) -> dict:
    _version_from_dependency(ctx)
    with session_scope() as db:
        job = db.get(Job, ctx.job_id)
        project = db.get(Project, job.project_id)
        params = dict(job.params or {})
        version = db.get(ModelVersion, job.base_model_id) if job.base_model_id else None
        if job.base_model_id and version is None:
            raise JobFailed("The job's model version is gone (deleted from the registry).")
        version_info = (version.id, version.name, version.path) if version else None
        prompt_ids = eval_prompt_ids(db, project, params)
        if not prompt_ids:
            raise JobFailed(f"Project {project.slug} has no verifiable prompts to verify (all excluded?).")
        prompts = {p.id: p for p in db.scalars(select(Prompt).where(Prompt.id.in_(prompt_ids)))}
        prompt_rows = [{"prompt_id": pid, "prompt": prompts[pid].value} for pid in prompt_ids]
        checks = {pid: (prompts[pid].reference, prompts[pid].tests) for pid in prompt_ids}
    work = job_dir(ctx.job_id)
    work.mkdir(parents=True, exist_ok=True)

    generations = _generate(ctx, work, local_path(version_info[2]), prompt_rows, params) if version_info else None
    with session_scope(write=True) as db:  # the answers to verify, stored first so verdicts can point at them
        job = db.get(Job, ctx.job_id)
        if generations is not None:
            if "completion_ids" not in (job.result or {}):
                fresh = [Completion(prompt_id=row["prompt_id"], text=clean_model_output(c["text"]), model_name=version_info[1],
                                    model_version_id=version_info[0], params=c.get("params") or {},
                                    meta={"verify_job_id": ctx.job_id, "finish_reason": c.get("finish_reason")})
                         for row in generations if row["prompt_id"] in checks for c in row["completions"]]  # fmt: skip
                db.add_all(fresh)
                db.flush()
                job.result = {**(job.result or {}), "completion_ids": [c.id for c in fresh]}
            completion_ids = list(job.result["completion_ids"])
            db.execute(Verdict.__table__.delete().where(Verdict.job_id == ctx.job_id))  # a retry starts over
        else:
            verified = select(Verdict.completion_id).where(Verdict.project_id == job.project_id, Verdict.job_id != ctx.job_id)
            completion_ids = list(db.scalars(select(Completion.id).where(Completion.prompt_id.in_(list(checks)),
                                                                         Completion.id.not_in(verified))))  # fmt: skip
            db.execute(Verdict.__table__.delete().where(Verdict.job_id == ctx.job_id))
        answers = db.execute(select(Completion.id, Completion.prompt_id, Completion.text, Completion.model_name,
                                    Completion.model_version_id).where(Completion.id.in_(completion_ids))).all()  # fmt: skip
    if not answers:
        raise JobFailed("Nothing to verify: no answers without a verdict (give a policy version to sample from).")

    tasks_path, verdicts_path = work / "verify_tasks.jsonl", work / "verdicts.jsonl"
    with open(tasks_path, "w", encoding="utf-8") as handle:
        for answer in answers:
            reference, tests = checks[answer.prompt_id]
            handle.write(json.dumps({"id": answer.id, "text": answer.text, "reference": reference, "tests": tests}) + "\n")
    ctx.progress(0.5, f"verifying {len(answers)} answers")
    workers = int(params.get("workers", 2))
    run_child(ctx, [python_executable(), "-m", "trainer.rewards.verifier", str(tasks_path), str(verdicts_path),
                    f"--workers={workers}"], work, env=sandbox_env())  # fmt: skip
    verdicts = {row["id"]: clean_model_output(row["verdict"]) for row in read_jsonl(verdicts_path)}

    by_id = {a.id: a for a in answers}
    with session_scope(write=True) as db:
        job = db.get(Job, ctx.job_id)
        for completion_id, v in verdicts.items():
            answer = by_id[completion_id]
            db.add(Verdict(project_id=job.project_id, prompt_id=answer.prompt_id, completion_id=completion_id,
                           job_id=ctx.job_id, model_version_id=answer.model_version_id, model_name=answer.model_name,
                           passed=bool(v["passed"]), reason=str(v.get("reason", "crash"))[:16],
                           rule=str(v.get("rule", ""))[:32], failed_tests=list(v.get("failed_tests") or [])[:50],
                           detail=str(v.get("detail") or "")[:4000], output_tail=str(v.get("output_tail") or "")[-4000:],
                           near_tolerance=bool(v.get("near_tolerance"))))  # fmt: skip
        db.flush()
        rates = job_pass_rates(db, job)
        metrics = {"verify/pass_at_1": rates["pass_at_1"], f"verify/pass_at_{rates['k']}": rates["pass_at_k"],
                   "verify/prompts": rates["prompts"], "verify/answers": rates["answers"]}  # fmt: skip
        result = {**(job.result or {}), "metrics": metrics, "pass_rates": rates, "verdicts": len(verdicts)}
        if version_info:
            result |= {"model_version_id": version_info[0], "model_name": version_info[1]}
        job.result = result
    ctx.metrics(0, metrics)
    return result
