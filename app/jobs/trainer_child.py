"""Running a trainer child for a job of any kind, and reading back its typed result.

Every domain whose jobs run the trainer (training, judges, verifiers) writes its inputs and a trainer.spec.JobSpec,
then calls `run_trainer`; so every kind gets the same launchers (`python -m trainer.run`, `accelerate launch`
for many processes, or a Ray job on a Ray cluster: app.jobs.ray_launch), the same idempotent retry and the same
typed result (trainer.results). Kind-agnostic: it names no kind and never reads the kind table.

    job_dir(job_id) -> Path                     the job's own directory in the artifact store
    check_launch_params(params)                 the launcher params every trainer job takes: clear 422s
    finished_result(output_dir, job_id)         the result an earlier attempt of this job published, else None
    run_trainer(ctx, spec, work, accelerate_config=None) -> JobResult
    stored_result(job) -> JobResult | None      the typed result kept in a finished job's row
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from app.config import get_settings
from app.db import session_scope
from app.errors import JobFailed, Unprocessable
from app.jobs.child import python_executable, run_child
from app.jobs.ray_launch import RESOURCE_PARAMS, check_resource_params, ray_python, run_ray_child
from app.jobs.runner import JobContext
from app.models import Job
from trainer.launch import (  # torch-free: a shipped config's name or a file
    LAUNCHERS,
    resolve_accelerate_config,
)
from trainer.results import JobResult, ResultError, from_dict, read_result

LAUNCH_PARAMS = {
    "launcher": "python, accelerate (accelerate launch runs the trainer on many GPUs or nodes) or ray (a Ray job "
    "on the cluster at RANKFORGE_RAY_ADDRESS)",
    "accelerate_config": "with launcher accelerate (or ray: many GPUs inside the Ray job): a shipped config (cpu, "
    "ddp, fsdp, deepspeed_zero2, deepspeed_zero3; trainer/accelerate/) or a config file path",
    **RESOURCE_PARAMS,
}
"""Job params that say how the trainer child starts (every kind that runs one takes them)."""
RESULT_KEY = "output"
"""Where a job's row keeps its typed result (job.result[RESULT_KEY])."""


def job_dir(job_id: int) -> Path:
    return get_settings().data_dir.resolve() / "jobs" / str(job_id)


def check_launch_params(params: dict) -> None:
    """launcher and accelerate_config, checked when the job is created (Unprocessable with the reason)."""
    if params.get("launcher", "python") not in LAUNCHERS:
        raise Unprocessable(f"params.launcher must be one of {', '.join(LAUNCHERS)}.")
    if params.get("accelerate_config") is not None:
        try:
            resolve_accelerate_config(params["accelerate_config"])
        except ValueError as error:
            raise Unprocessable(f"params.{error}") from error
    check_resource_params(params)


def trainer_command(spec_path: Path, launcher: str, accelerate_config: str | None = None) -> list[str]:
    """The child's command. Under launcher ray, the Ray job's entrypoint: `accelerate launch` with an
    accelerate_config (many processes inside the one Ray job), else `python -m trainer.run`."""
    python = ray_python() if launcher == "ray" else python_executable()
    if launcher == "accelerate" or (launcher == "ray" and accelerate_config):
        config = ["--config_file", str(resolve_accelerate_config(accelerate_config))] if accelerate_config else []
        return [python, "-m", "accelerate.commands.launch", *config, "-m", "trainer.run", str(spec_path)]
    return [python, "-m", "trainer.run", str(spec_path)]


def finished_result(output_dir: Path, job_id: int) -> JobResult | None:
    """The result this job's earlier attempt published in output_dir (a retry stores it instead of running
    again); None when there is none, or output_dir is another job's."""
    try:
        result = read_result(output_dir)
    except ResultError:
        return None
    return result if result.job_id == job_id else None


def run_trainer(ctx: JobContext, spec: Any, work: Path, accelerate_config: str | None = None) -> JobResult:
    """Run `spec` (a trainer.spec.JobSpec whose inputs are written) as the job's supervised child and return its
    typed result. Output left in output_dir by another run: removed when it lies in the job's own directory
    `work`, else the job fails rather than overwrite it; stale temp dirs of killed attempts are removed."""
    output_dir = Path(spec.output_dir)
    if output_dir.exists():
        if not output_dir.is_relative_to(work):
            raise JobFailed(f"{output_dir} exists but is not this job's output; not overwriting it.")
        shutil.rmtree(output_dir)
    for stale in output_dir.parent.glob(f"{output_dir.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed attempt (its child died with it)
    spec_path = spec.write(work / "spec.json")
    command = trainer_command(spec_path, spec.launcher, accelerate_config)
    if spec.launcher == "ray":
        with session_scope() as db:
            params = dict(db.get(Job, ctx.job_id).params or {})
        run_ray_child(ctx, command, work, {name: params.get(name) for name in RESOURCE_PARAMS})
    else:
        run_child(ctx, command, work)
    try:
        return read_result(output_dir)
    except ResultError as error:
        raise JobFailed(f"The trainer reported success but its result is not readable: {error}") from error


def stored_result(job: Job | None) -> JobResult | None:
    """The typed result a finished trainer job keeps in its row; None for a job without one (not finished, or
    not a trainer job). A garbled one fails loudly (ResultError): no figure is guessed."""
    data = (job.result or {}).get(RESULT_KEY) if job is not None else None
    return from_dict(data, f"job {job.id}'s result") if data is not None else None
