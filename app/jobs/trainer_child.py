"""Running a trainer child for a job of any kind, and reading back its typed result.

Every domain whose jobs run the trainer (training, judges, verifiers) writes its inputs and a trainer.spec.JobSpec,
then calls `run_trainer`; so every kind gets the same launchers (`python -m trainer.run`, `accelerate launch`
for many processes, or a Ray job on a Ray cluster: app.jobs.ray_launch), the same idempotent retry and the same
typed result (trainer.results). Kind-agnostic: it names no kind and never reads the kind table.

    job_dir(job_id) -> Path                     the job's own directory in the artifact store
    check_launch_params(params)                 the launcher params every trainer job takes: clear 422s
    finished_result(output_dir, job_id)         the result an earlier attempt of this job published, else None
    run_trainer(ctx, spec, work, accelerate_config=None) -> JobResult
    stage_for_ray(spec, work, job_id), fetch_ray_output(location, output_dir)   launcher ray with an object store:
                                                the inputs as one bundle in the store, the output back from it
    stored_result(job) -> JobResult | None      the typed result kept in a finished job's row
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.config import get_settings
from app.db import session_scope
from app.errors import JobFailed, Unprocessable
from app.jobs.child import python_executable, run_child
from app.jobs.ray_entry import BUNDLE_KEY, SPEC_PLACEHOLDER
from app.jobs.ray_launch import RESOURCE_PARAMS, check_resource_params, ray_python, run_ray_child
from app.jobs.runner import JobContext
from app.models import Job
from app.store import STORE_MANIFEST, StoreError, get_store, open_location
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
        resources = {name: params.get(name) for name in RESOURCE_PARAMS}
        if get_store().local:  # the cluster's nodes see the worker's files (same machine, a shared mount)
            run_ray_child(ctx, command, work, resources)
        else:  # inputs and output travel through the object store
            in_location, out_location = stage_for_ray(spec, work, ctx.job_id, ctx.log)
            entry = [ray_python(), "-m", "app.jobs.ray_entry", in_location, out_location, "--",
                     *trainer_command(Path(SPEC_PLACEHOLDER), spec.launcher, accelerate_config)]  # fmt: skip
            run_ray_child(ctx, entry, work, resources)
            fetch_ray_output(out_location, output_dir)
    else:
        run_child(ctx, command, work)
    try:
        return read_result(output_dir)
    except ResultError as error:
        raise JobFailed(f"The trainer reported success but its result is not readable: {error}") from error


SPEC_INPUTS = ("base_model", "reward_model", "dataset_path", "prompts_path")
"""The spec's fields that name input files or directories (what a Ray job on another machine needs)."""


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def stage_for_ray(spec: Any, work: Path, job_id: int, log: Callable[[str], None] | None = None) -> tuple[str, str]:
    """Publish the job's inputs to the object store for a Ray job (app.jobs.ray_entry reads them on its node).
    Each input (base model, reward model, dataset snapshot, prompts file) is content-addressed,
    `inputs/<its manifest sha256>`, and uploaded only when the store has no artifact there yet: an unchanged input
    goes up once, whatever job uses it next. The job's bundle (`jobs/<id>/ray-in-<hex>`) is then just spec.json,
    each input path replaced by its location (`_bundle`: {field: {"location", "file" for a single file}}).
    Returns (bundle location, where the Ray job publishes its output); JobFailed with the store's message when the
    store refuses a write. `log` gets one line per input (uploaded or already there)."""
    store = get_store()
    token = secrets.token_hex(4)
    data, names = spec.to_dict(), {}
    bundle = work / f"ray-in-{token}"
    try:
        for field in SPEC_INPUTS:
            source = data.get(field)
            if not source:
                continue
            location, uploaded = store.publish_content_addressed(source, "inputs")
            names[field] = {"location": location} | ({} if Path(source).is_dir() else {"file": Path(source).name})
            data[field] = None
            if log is not None:
                log(f"Ray job input {field}: {'uploaded to' if uploaded else 'already in the store at'} {location}\n")
        data[BUNDLE_KEY] = names
        bundle.mkdir(parents=True)
        (bundle / "spec.json").write_text(json.dumps(data, indent=2), encoding="utf-8")
        in_location = store.location("jobs", str(job_id), f"ray-in-{token}")
        store.publish(bundle, in_location)
    except StoreError as error:
        raise JobFailed(f"Staging the job's inputs for Ray: {error.detail}") from error
    finally:
        shutil.rmtree(bundle, ignore_errors=True)
    return in_location, store.location("jobs", str(job_id), f"ray-out-{token}")


def fetch_ray_output(out_location: str, output_dir: Path) -> None:
    """The output a Ray job published (app.jobs.ray_entry) into output_dir on this machine, where the job's
    handler reads it as a local child's (linked from this machine's cached copy)."""
    try:
        local = open_location(out_location).local_copy()
    except StoreError as error:
        raise JobFailed(f"Reading the Ray job's output from {out_location}: {error.detail}") from error
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(local, output_dir, copy_function=_link_or_copy, ignore=shutil.ignore_patterns(STORE_MANIFEST))


def stored_result(job: Job | None) -> JobResult | None:
    """The typed result a finished trainer job keeps in its row; None for a job without one (not finished, or
    not a trainer job). A garbled one fails loudly (ResultError): no figure is guessed."""
    data = (job.result or {}).get(RESULT_KEY) if job is not None else None
    return from_dict(data, f"job {job.id}'s result") if data is not None else None
