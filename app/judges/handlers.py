"""The `judge` job: a judge's verdicts on a project's comparisons, stored as AI judgments.

    run_judge_job(ctx) -> {"metrics": {...}, "output", "stored", "counted", "routed_to_humans", "judge_id",
                           "template_version"}

It writes the comparisons to judge (those this judge has not judged with the current template: a repeated or
retried job resumes) as JSON lines, runs the trainer child for its kind (app.jobs.trainer_child.run_trainer,
trainer/judge.py; `launcher: accelerate` too), and stores the verdicts, the AI policy applied and the job's result in
one transaction. An attempt that died after the child finished stores that child's output instead of judging again.
"""

from __future__ import annotations

from app.db import session_scope
from app.errors import JobFailed
from app.jobs.runner import JobContext
from app.jobs.trainer_child import RESULT_KEY, finished_result, job_dir, run_trainer
from app.judges.service import store_verdicts, trainer_params, write_judge_inputs
from app.models import Job, ModelVersion
from app.store import local_path
from trainer.params import DEFAULTS
from trainer.results import JudgmentsResult
from trainer.spec import JobSpec


def run_judge_job(ctx: JobContext) -> dict:
    work = job_dir(ctx.job_id)
    output_dir = work / "output"
    work.mkdir(parents=True, exist_ok=True)
    result = finished_result(output_dir, ctx.job_id)
    if result is None:
        inputs = work / "comparisons.jsonl"
        with session_scope() as db:
            job = db.get(Job, ctx.job_id)
            judge, params, _version, _body = trainer_params(db, job)
            paths = {}
            for column, role in (("base_model_id", "base_model"), ("reward_model_id", "reward_model")):
                version_id = getattr(job, column)
                if version_id is not None:
                    version = db.get(ModelVersion, version_id)
                    if version is None:
                        raise JobFailed(f"The judge's model version {version_id} is gone (deleted from the registry).")
                    paths[role] = local_path(version.path)  # a version in an object store: a cached copy
            count = write_judge_inputs(db, job, inputs)
            kind, seed = job.kind, int(job.params.get("seed", 0) or 0)
            launcher, accelerate_config = job.params.get("launcher", "python"), job.params.get("accelerate_config")
        if count == 0:
            ctx.log("Nothing to judge: every comparison in scope already has this judge's verdict.\n")
            stored = {"metrics": {"judge/comparisons": 0}, "stored": 0, "counted": 0, "routed_to_humans": 0,
                      "judge_id": judge.id}  # fmt: skip
            with session_scope(write=True) as db:
                db.get(Job, ctx.job_id).result = stored
            return stored
        try:
            spec = JobSpec(kind=kind, job_id=ctx.job_id, prompts_path=str(inputs), output_dir=str(output_dir),
                           params=DEFAULTS[kind] | params, seed=seed, launcher=launcher, **paths)  # fmt: skip
        except ValueError as error:
            raise JobFailed(f"The judge job's spec is not valid: {error}") from error
        ctx.progress(0.0, f"judging {count} comparisons with {judge.name} ({judge.method})")
        result = run_trainer(ctx, spec, work, accelerate_config)
    else:
        ctx.log(f"{output_dir} was finished by an earlier attempt: storing it.\n")
    if not isinstance(result, JudgmentsResult):
        raise JobFailed(f"The judge child wrote {result.output}, not judgments.")
    verdicts = result.read_judgments()
    with session_scope(write=True) as db:
        job = db.get(Job, ctx.job_id)
        stored = {"metrics": result.metrics, RESULT_KEY: result.to_dict()} | store_verdicts(db, job, verdicts)
        job.result = stored  # with the verdicts, in one transaction: a retry finds them stored
    return stored
