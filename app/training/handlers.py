"""The training domain's job handler: one for every trainer kind the training domain owns.

    run_training_job(ctx) -> {"metrics", "output" (the typed result), "dataset_id", and "model_version_id" |
                              "completion_ids" | "scored_comparisons"}

It gathers the job's inputs (the dataset snapshot, built by the datasets domain when the job names none, or the
one a job it depends on trained on: `dataset_from`; the project's prompts for kinds that read them), writes a
trainer.spec.JobSpec, runs the trainer child (app.jobs.trainer_child.run_trainer: `python -m trainer.run` or
`accelerate launch`), and hands the typed result (trainer.results) to the domain it belongs to: a model version to
the registry, generations to imports (new completions and comparisons), scores to the rating queue's order.
The trainer writes output_dir atomically; a version is registered only when output_dir and its result exist.
A retry after a worker crash is idempotent: a finished output_dir is registered instead of trained again.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.datasets.handlers import job_snapshot
from app.db import session_scope
from app.errors import JobFailed
from app.imports.messages import CONTINUATION_KEY, request_tools
from app.imports.service import add_generations
from app.jobs.runner import JobContext
from app.jobs.trainer_child import RESULT_KEY, finished_result, job_dir, run_trainer
from app.models import Comparison, Completion, Job, ModelVersion, Project, Prompt
from app.registry.service import register_job_output
from app.store import StoreError, get_store, local_path, open_location
from app.tasks.service import apply_scores
from app.training.kinds import DEFAULTS, KIND_INFO, split_params
from trainer.results import GenerationsResult, JobResult, ModelResult, ScoresResult
from trainer.spec import JobSpec


def output_name(job: Job, project: Project) -> str:
    return f"{project.slug}-{job.kind}-{job.id}"


def output_dir_for(job: Job, project: Project) -> Path:
    """A model goes to the model store under its name; any other output stays in the job's directory."""
    if not KIND_INFO[job.kind].trains_model:
        return job_dir(job.id) / "output"
    store = get_store()
    if store.local:
        return Path(store.location("models", output_name(job, project)))
    return job_dir(job.id) / "model"  # this machine's scratch; published to the store when the child is done


def publish_model(job: Job, output_dir: Path, name: str) -> str:
    """The trained model into the artifact store (files, then the store manifest); its location. On a local store
    it is already in place (the trainer renamed it there) and only the manifest is added. A retry finds a model an
    earlier attempt published and keeps it. The store refusing the write fails the job with the store's message."""
    store = get_store()
    location = str(output_dir) if store.local else store.location("models", name)
    if not store.local and open_location(location).exists():
        return location
    try:
        store.publish(output_dir, location)
    except StoreError as error:
        raise JobFailed(str(error.detail)) from error
    return location


def write_prompts(db: Session, project: Project, path: Path, limit: int | None, prompt_ids: list | None = None) -> int:
    query = select(Prompt).where(Prompt.project_id == project.id).order_by(Prompt.id.desc())
    if prompt_ids is not None:
        query = query.where(Prompt.id.in_([int(i) for i in prompt_ids]))
    if limit:
        query = query.limit(int(limit))
    n = 0
    with open(path, "w", encoding="utf-8") as handle:
        for prompt in db.scalars(query):
            row = {"prompt_id": prompt.id, "prompt": prompt.value}
            meta = prompt.meta if isinstance(prompt.meta, dict) else {}
            if prompt.is_chat and (tools := request_tools(meta.get("tools"))):
                row["tools"] = tools  # the conversation's tools, for the chat template (trainer.data.to_prompt_text)
            if prompt.reference is not None or prompt.tests is not None:  # verifiable: the "verifier" reward's inputs
                if meta.get("verify_excluded"):
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
    model to score; a completion that is a continuation (tool calls, a trajectory) also carries its `messages`, which a
    process reward model scores step by step."""
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
    stored = db.execute(select(Completion.id, Completion.text, Completion.meta)
                        .where(Completion.prompt_id.in_(list(by_prompt)))).all()  # fmt: skip
    texts = {c.id: c.text for c in stored}
    continuations = {c.id: c.meta[CONTINUATION_KEY] for c in stored
                     if isinstance(c.meta, dict) and isinstance(c.meta.get(CONTINUATION_KEY), list)}  # fmt: skip
    with open(path, "w", encoding="utf-8") as handle:
        for prompt_id, completion_ids in by_prompt.items():
            row = {"prompt_id": prompt_id, "prompt": prompts[prompt_id].value,
                   "completions": [{"completion_id": c, "text": texts[c],
                                    **({"messages": continuations[c]} if c in continuations else {})}
                                   for c in sorted(completion_ids)]}  # fmt: skip
            handle.write(json.dumps(row) + "\n")
    return len(by_prompt)


def _inputs_from_dependencies(ctx: JobContext) -> None:
    """Params base_model_from / reward_model_from / dataset_from: the model version a job this one depends on
    registered becomes this job's base / reward model, and the snapshot it trained on this job's dataset, now that
    they exist (a round chains its steps this way, and trains reward model and policy on one snapshot)."""
    with session_scope(write=True) as db:
        job = db.get(Job, ctx.job_id)
        for param, column, key in (("base_model_from", "base_model_id", "model_version_id"),
                                   ("reward_model_from", "reward_model_id", "model_version_id"),
                                   ("dataset_from", "dataset_id", "dataset_id")):  # fmt: skip
            if job.params.get(param) is None:
                continue
            source = db.get(Job, int(job.params[param]))
            found = (source.result or {}).get(key) if source else None
            if found is None:
                raise JobFailed(f"{param}: job {job.params[param]} has no {key.removesuffix('_id').replace('_', ' ')}.")
            setattr(job, column, int(found))


def _prompts_file(db: Session, project: Project, kind: str, app_params: dict, has_snapshot: bool,
                  path: Path) -> Path | None:  # fmt: skip
    """The prompts file the kind reads (its `prompts` in the kind table), written to path; None when it reads none."""
    wanted = KIND_INFO[kind].prompts
    if wanted == "open_comparisons":
        write_score_prompts(db, project, path, app_params.get("prompt_ids"))
    elif wanted == "all" or (wanted == "without_snapshot" and not has_snapshot):
        write_prompts(db, project, path, app_params.get("max_prompts"), app_params.get("prompt_ids"))
    else:
        return None
    return path


def run_training_job(ctx: JobContext) -> dict:
    """The worker's handler for every training kind."""
    _inputs_from_dependencies(ctx)
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
        if KIND_INFO[kind].base_model is not None and base is None:
            raise JobFailed("The job's base model version is gone (deleted from the registry).")
        base_path, reward_path = (base.path if base else None), (reward.path if reward else None)
    # the child reads local files: a version in an object store is this machine's cached copy of it
    base_path, reward_path = local_path(base_path), local_path(reward_path)
    if trainer_params.get("reference_model"):  # a round's KL reference: a registered version's location
        trainer_params["reference_model"] = local_path(trainer_params["reference_model"])
    work.mkdir(parents=True, exist_ok=True)
    snapshot = job_snapshot(ctx, KIND_INFO[kind].dataset_format)

    result = finished_result(output_dir, ctx.job_id)
    if result is None:
        with session_scope() as db:
            prompts_path = _prompts_file(db, db.get(Project, project.id), kind, app_params, snapshot is not None,
                                         work / "prompts.jsonl")  # fmt: skip
        try:
            spec = JobSpec(kind=kind, job_id=ctx.job_id, base_model=base_path, reward_model=reward_path,
                           dataset_path=str(snapshot.path) if snapshot else None,
                           prompts_path=str(prompts_path) if prompts_path else None, output_dir=str(output_dir),
                           params=DEFAULTS[kind] | trainer_params, launcher=app_params.get("launcher", "python"),
                           seed=int(app_params.get("seed", 0) or 0))  # fmt: skip
        except ValueError as error:  # params were checked when the job was created; the trainer may have changed
            raise JobFailed(f"The job's spec is not valid: {error}") from error
        ctx.progress(0.0, f"starting {kind}")
        result = run_trainer(ctx, spec, work, app_params.get("accelerate_config"))
    else:
        ctx.log(f"{output_dir} was finished by an earlier attempt: storing it.\n")

    stored = {"metrics": result.metrics, RESULT_KEY: result.to_dict(), "dataset_id": snapshot.id if snapshot else None}
    location = None
    if isinstance(result, ModelResult):  # before the row: a version is registered only once it is in the store
        manifest = json.loads((Path(result.output_dir) / "manifest.json").read_text(encoding="utf-8"))
        ctx.progress(0.98, "publishing the model to the artifact store")
        location = publish_model(job, Path(result.output_dir), name)
    with session_scope(write=True) as db:
        job = db.get(Job, ctx.job_id)
        stored |= _store_output(db, job, result, name, snapshot, location, manifest if location else None)
        job.result = stored  # with the rows above, in one transaction: a retry sees them done
    return stored


def _store_output(db: Session, job: Job, result: JobResult, name: str, snapshot, location: str | None = None,
                  manifest: dict | None = None) -> dict:  # fmt: skip
    """Hand the output to the domain it belongs to; what the job's result records of it."""
    if isinstance(result, GenerationsResult):
        if job.result and "completion_ids" in job.result:  # stored by an attempt that died before finishing
            return {k: job.result[k] for k in ("completion_ids", "comparison_ids")}
        return add_generations(db, db.get(Project, job.project_id), db.get(ModelVersion, job.base_model_id),
                               result.read_generations(), job_id=job.id, arena=bool(job.params.get("arena")))  # fmt: skip
    if isinstance(result, ScoresResult):
        return {"scored_comparisons": apply_scores(db, job.project_id, result.read_scores())}
    if isinstance(result, ModelResult):
        version = register_job_output(db, job, name, location, manifest,
                                      snapshot.id if snapshot else None, snapshot.sha256 if snapshot else None)  # fmt: skip
        return {"model_version_id": version.id}
    raise JobFailed(f"A {job.kind} job's output ({result.output}) has no place in the training domain.")
