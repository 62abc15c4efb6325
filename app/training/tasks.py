"""The training domain's job handler: one for every trainer kind.

    run_training_job(ctx) -> {"metrics", "dataset_id", and "model_version_id" | "completion_ids" | "scored_..."}

It gathers the job's inputs (the dataset snapshot, built by the datasets domain when the job names none; the
project's prompts for kinds that read them), writes a trainer.spec.JobSpec, runs `python -m trainer.run
spec.json` (or `accelerate launch ... -m trainer.run spec.json`) as a supervised child (app.jobs.child), and
hands what the trainer wrote to the domain it belongs to: a model version to the registry, generations to
imports (new completions and comparisons), scores to the rating queue's order (tasks).
The trainer writes output_dir atomically; a version is registered only when output_dir and its manifest exist.
A retry after a worker crash is idempotent: a finished output_dir is registered instead of trained again.
"""

from __future__ import annotations

import collections
import json
import shutil
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import get_settings
from app.datasets.tasks import job_snapshot
from app.db import session_scope
from app.errors import JobFailed
from app.imports.service import add_generations
from app.jobs.child import python_executable, run_child
from app.jobs.runner import JobContext
from app.models import Comparison, Completion, Job, ModelVersion, Project, Prompt
from app.registry.service import register_job_output
from app.tasks.service import apply_scores
from app.training.kinds import DEFAULTS, PROMPT_KINDS, SNAPSHOT_FORMAT, split_params
from trainer.spec import JobSpec


def job_dir(job_id: int) -> Path:
    return get_settings().data_dir.resolve() / "jobs" / str(job_id)


def output_name(job: Job, project: Project) -> str:
    return f"{project.slug}-{job.kind}-{job.id}"


def output_dir_for(job: Job, project: Project) -> Path:
    if job.kind in ("generate", "score"):
        return job_dir(job.id) / "output"
    return get_settings().data_dir.resolve() / "models" / output_name(job, project)


def _prompt_value(prompt: Prompt):
    return prompt.messages if prompt.is_chat else prompt.messages[0]["content"]


def write_prompts(db: Session, project: Project, path: Path, limit: int | None, prompt_ids: list | None = None) -> int:
    query = select(Prompt).where(Prompt.project_id == project.id).order_by(Prompt.id.desc())
    if prompt_ids is not None:
        query = query.where(Prompt.id.in_([int(i) for i in prompt_ids]))
    if limit:
        query = query.limit(int(limit))
    n = 0
    with open(path, "w", encoding="utf-8") as handle:
        for prompt in db.scalars(query):
            row = {"prompt_id": prompt.id, "prompt": _prompt_value(prompt)}
            if prompt.reference is not None or prompt.tests is not None:  # verifiable: the "verifier" reward's inputs
                if (prompt.meta or {}).get("verify_excluded"):
                    continue
                row |= {"reference": json.dumps(prompt.reference) if prompt.reference is not None else None,
                        "tests": json.dumps(prompt.tests) if prompt.tests is not None else None,
                        "answer": str((prompt.reference or {}).get("answer", "")) or None}  # fmt: skip
            handle.write(json.dumps(row) + "\n")
            n += 1
    if n == 0:
        raise JobFailed(f"Project {project.slug} has no prompts.")
    return n


def write_score_prompts(db: Session, project: Project, path: Path, prompt_ids: list | None = None) -> int:
    """Every prompt of an open comparison with its completions (of `prompt_ids` when given), for the reward
    model to score."""
    query = select(Comparison).where(Comparison.project_id == project.id, ~Comparison.is_gold,
                                     Comparison.n_judgments < Comparison.required)  # fmt: skip
    if prompt_ids is not None:
        query = query.where(Comparison.prompt_id.in_([int(i) for i in prompt_ids]))
    comparisons = db.scalars(query)
    by_prompt: dict[int, set[int]] = collections.defaultdict(set)
    for comparison in comparisons:
        by_prompt[comparison.prompt_id].update(comparison.completion_ids)
    if not by_prompt:
        raise JobFailed(f"Project {project.slug} has no open comparisons to score.")
    prompts = {p.id: p for p in db.scalars(select(Prompt).where(Prompt.id.in_(list(by_prompt))))}
    texts = dict(
        db.execute(
            select(Completion.id, Completion.text).where(Completion.prompt_id.in_(list(by_prompt)))
        ).all()
    )
    with open(path, "w", encoding="utf-8") as handle:
        for prompt_id, completion_ids in by_prompt.items():
            row = {"prompt_id": prompt_id, "prompt": _prompt_value(prompts[prompt_id]),
                   "completions": [{"completion_id": c, "text": texts[c]} for c in sorted(completion_ids)]}  # fmt: skip
            handle.write(json.dumps(row) + "\n")
    return len(by_prompt)


def child_command(spec_path: Path, app_params: dict) -> list[str]:
    python = python_executable()
    if app_params.get("launcher") == "accelerate":
        from trainer.launch import resolve_accelerate_config  # torch-free: a shipped config's name or a file

        config = (
            ["--config_file", str(resolve_accelerate_config(app_params["accelerate_config"]))]
            if app_params.get("accelerate_config")
            else []
        )
        return [python, "-m", "accelerate.commands.launch", *config, "-m", "trainer.run", str(spec_path)]
    return [python, "-m", "trainer.run", str(spec_path)]


def _read_manifest(output_dir: Path) -> dict | None:
    path = output_dir / "manifest.json"
    if not output_dir.is_dir() or not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _models_from_dependencies(ctx: JobContext) -> None:
    """Params base_model_from / reward_model_from: the model version a job this one depends on registered
    becomes this job's base / reward model now that it exists (a round chains its steps this way)."""
    with session_scope(write=True) as db:
        job = db.get(Job, ctx.job_id)
        for param, column in (("base_model_from", "base_model_id"), ("reward_model_from", "reward_model_id")):
            if job.params.get(param) is None:
                continue
            source = db.get(Job, int(job.params[param]))
            version_id = ((source.result or {}).get("model_version_id") if source else None)
            if version_id is None:
                raise JobFailed(f"{param}: job {job.params[param]} registered no model version.")
            setattr(job, column, int(version_id))


def run_training_job(ctx: JobContext) -> dict:
    """The worker's handler for every training kind."""
    _models_from_dependencies(ctx)
    with session_scope() as db:
        job = db.get(Job, ctx.job_id)
        project = db.get(Project, job.project_id)
        kind = job.kind
        app_params, trainer_params = split_params(job.params)
        work = job_dir(job.id)
        output_dir = output_dir_for(job, project)
        name = output_name(job, project)
        base = db.get(ModelVersion, job.base_model_id) if job.base_model_id else None
        reward = db.get(ModelVersion, job.reward_model_id) if job.reward_model_id else None
        if kind != "score" and base is None:
            raise JobFailed("The job's base model version is gone (deleted from the registry).")
        base_path, reward_path = (base.path if base else None), (reward.path if reward else None)
    work.mkdir(parents=True, exist_ok=True)
    snapshot = job_snapshot(ctx, SNAPSHOT_FORMAT.get(kind))

    manifest = _read_manifest(output_dir)
    if manifest is None or manifest.get("job_id") != ctx.job_id:
        if output_dir.exists():
            raise JobFailed(f"{output_dir} exists but is not this job's output; not overwriting it.")
        for stale in output_dir.parent.glob(f"{output_dir.name}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed attempt (its child died with it)
        prompts_path = None
        with session_scope() as db:
            project = db.get(Project, project.id)
            if kind == "score":
                prompts_path = work / "prompts.jsonl"
                write_score_prompts(db, project, prompts_path, app_params.get("prompt_ids"))
            elif kind in PROMPT_KINDS and (snapshot is None or kind == "generate"):
                prompts_path = work / "prompts.jsonl"
                write_prompts(db, project, prompts_path, app_params.get("max_prompts"), app_params.get("prompt_ids"))
        try:
            spec = JobSpec(kind=kind, job_id=ctx.job_id, base_model=base_path, reward_model=reward_path,
                           dataset_path=str(snapshot.path) if snapshot else None,
                           prompts_path=str(prompts_path) if prompts_path else None, output_dir=str(output_dir),
                           params=DEFAULTS[kind] | trainer_params, launcher=app_params.get("launcher", "python"),
                           seed=int(app_params.get("seed", 0) or 0))  # fmt: skip
        except ValueError as error:  # params were checked when the job was created; the trainer may have changed
            raise JobFailed(f"The job's spec is not valid: {error}") from error
        spec_path = spec.write(work / "spec.json")
        ctx.progress(0.0, f"starting {kind}")
        run_child(ctx, child_command(spec_path, app_params), work)
        manifest = _read_manifest(output_dir)
        if manifest is None:
            raise JobFailed(f"The trainer reported success but {output_dir}/manifest.json is missing.")
    else:
        ctx.log(f"{output_dir} was finished by an earlier attempt: registering it.\n")

    result = {"metrics": manifest.get("metrics") or {}, "dataset_id": snapshot.id if snapshot else None}
    with session_scope(write=True) as db:
        job = db.get(Job, ctx.job_id)
        if kind == "generate":
            result |= _store_generations(db, job, output_dir)
        elif kind == "score":
            scores = {row["completion_id"]: float(row["score"]) for row in _read_jsonl(output_dir / "scores.jsonl")}
            result["scored_comparisons"] = apply_scores(db, job.project_id, scores)
        else:
            version = register_job_output(db, job, name, output_dir, manifest, snapshot.id if snapshot else None,
                                          snapshot.sha256 if snapshot else None)  # fmt: skip
            result["model_version_id"] = version.id
        job.result = result  # with the rows above, in one transaction: a retry sees them done
    return result


def _store_generations(db: Session, job: Job, output_dir: Path) -> dict:
    if job.result and "completion_ids" in job.result:  # stored by an attempt that died before finishing
        return {k: job.result[k] for k in ("completion_ids", "comparison_ids")}
    return add_generations(db, db.get(Project, job.project_id), db.get(ModelVersion, job.base_model_id),
                           _read_jsonl(output_dir / "generations.jsonl"), job_id=job.id,
                           arena=bool(job.params.get("arena")))  # fmt: skip
