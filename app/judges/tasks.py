"""The `judge` job: a judge's verdicts on a project's comparisons, stored as AI judgments.

    run_judge_job(ctx) -> {"metrics": {...}, "stored", "counted", "routed_to_humans", "judge_id", "template_version"}

It writes the comparisons to judge (those this judge has not judged with the current template: a repeated or
retried job resumes) as JSON lines, runs `python -m trainer.run spec.json` for the `judge` kind (trainer/judge.py)
as a supervised child, and stores the verdicts, the AI policy applied and the job's result in one transaction.
An attempt that died after the child finished stores that child's output instead of judging again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from app.config import get_settings
from app.db import session_scope
from app.errors import JobFailed
from app.jobs.child import python_executable, run_child
from app.jobs.runner import JobContext
from app.judges.service import store_verdicts, trainer_params, write_judge_inputs
from app.models import Job, ModelVersion
from trainer.params import DEFAULTS
from trainer.spec import JobSpec


def _job_dir(job_id: int) -> Path:
    return get_settings().data_dir.resolve() / "jobs" / str(job_id)


def _manifest(output_dir: Path) -> dict | None:
    path = output_dir / "manifest.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def run_judge_job(ctx: JobContext) -> dict:
    work = _job_dir(ctx.job_id)
    output_dir = work / "output"
    work.mkdir(parents=True, exist_ok=True)
    manifest = _manifest(output_dir)
    if manifest is None or manifest.get("job_id") != ctx.job_id:
        if output_dir.exists():
            shutil.rmtree(output_dir)
        for stale in work.glob("output.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)
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
                    paths[role] = version.path
            count = write_judge_inputs(db, job, inputs)
            seed = int(job.params.get("seed", 0) or 0)
        if count == 0:
            ctx.log("Nothing to judge: every comparison in scope already has this judge's verdict.\n")
            result = {"metrics": {"judge/comparisons": 0}, "stored": 0, "counted": 0, "routed_to_humans": 0,
                      "judge_id": judge.id}  # fmt: skip
            with session_scope(write=True) as db:
                db.get(Job, ctx.job_id).result = result
            return result
        try:
            spec = JobSpec(kind="judge", job_id=ctx.job_id, prompts_path=str(inputs), output_dir=str(output_dir),
                           params=DEFAULTS["judge"] | params, seed=seed, **paths)  # fmt: skip
        except ValueError as error:
            raise JobFailed(f"The judge job's spec is not valid: {error}") from error
        spec_path = spec.write(work / "spec.json")
        ctx.progress(0.0, f"judging {count} comparisons with {judge.name} ({judge.method})")
        run_child(ctx, [python_executable(), "-m", "trainer.run", str(spec_path)], work)
        manifest = _manifest(output_dir)
        if manifest is None:
            raise JobFailed(f"The trainer reported success but {output_dir}/manifest.json is missing.")
    else:
        ctx.log(f"{output_dir} was finished by an earlier attempt: storing it.\n")
    with open(output_dir / "judgments.jsonl", encoding="utf-8") as handle:
        verdicts = [json.loads(line) for line in handle if line.strip()]
    with session_scope(write=True) as db:
        job = db.get(Job, ctx.job_id)
        result = {"metrics": manifest.get("metrics") or {}} | store_verdicts(db, job, verdicts)
        job.result = result  # with the verdicts, in one transaction: a retry finds them stored
    return result
