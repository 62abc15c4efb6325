"""The registry's job handler: `serve`, a registered local version served as an endpoint for as long as the job runs.

    run_serve_job(ctx)   runs while the server serves; ends cancelled (cancel) or failed (the server stopped)

The worker starts an existing OpenAI-compatible server (`transformers serve`, or `vllm serve` where installed:
app.registry.local_serving.serve_command; never a server of our own) as the job's child, in its own process group,
on a free port; it dies with the worker (PR_SET_PDEATHSIG), so a killed worker leaves no orphan and its job is
retried or failed by the queue's usual rules. Once GET /v1/models lists the model, the endpoint (VERSION-served by
default) is registered or pointed at the new port and marked served by this job. The job then runs until cancelled:
cancel ends the server (SIGTERM, then SIGKILL) and marks the endpoint unavailable; a server that exits by itself
fails the job with its log's tail, and the endpoint is marked unavailable too.
"""

from __future__ import annotations

import subprocess

from app.db import session_scope
from app.errors import JobCancelled, JobFailed, RankforgeError
from app.jobs.child import _die_with_parent, end_process_group
from app.jobs.runner import JobContext
from app.jobs.trainer_child import job_dir
from app.models import Job, ModelVersion
from app.registry.local_serving import (
    free_port,
    mark_stopped,
    register_served,
    serve_command,
    server_env,
    wait_until_serving,
)

LOG_TAIL_CHARS = 1500


def _tail(path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-LOG_TAIL_CHARS:].strip() or "no output"
    except OSError:
        return "no output"


def run_serve_job(ctx: JobContext) -> dict:
    with session_scope() as db:
        job = db.get(Job, ctx.job_id)
        version = db.get(ModelVersion, job.base_model_id) if job.base_model_id else None
        if version is None:
            raise JobFailed("The version to serve is gone (deleted from the registry).")
        params, path, project_id = dict(job.params or {}), version.path, version.project_id
    name = params.get("endpoint_name") or f"{version.name}-served"
    host = params.get("host") or "127.0.0.1"
    port = free_port(host)
    url = f"http://{params.get('advertise_host') or host}:{port}"
    try:
        command = serve_command(path, host=host, port=port, server=params.get("server", "transformers"),
                                device=params.get("device") or None)  # fmt: skip
    except RankforgeError as error:
        raise JobFailed(str(error.detail)) from error
    work = job_dir(ctx.job_id)
    work.mkdir(parents=True, exist_ok=True)
    log_path = work / "serve.log"
    with open(log_path, "ab") as log:
        child = subprocess.Popen(command, cwd=work, env=server_env(), stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent)  # fmt: skip
    (work / "child.pid").write_text(str(child.pid))
    ctx.log(f"started {' '.join(command[:2])} (pid {child.pid}) for {version.name} on {host}:{port}\n")
    reason = "the serve job stopped"
    try:
        try:
            wait_until_serving(url, path, child, timeout=float(params.get("start_timeout", 300)),
                               cancel=ctx.cancel_event)  # fmt: skip
        except RankforgeError as error:
            raise JobFailed(f"{error.detail} Server log: {_tail(log_path)}") from error
        with session_scope(write=True) as db:
            try:
                register_served(db, name=name, url=url, model=path, project_id=project_id, job_id=ctx.job_id)
            except RankforgeError as error:
                raise JobFailed(str(error.detail)) from error
        ctx.progress(0.0, f"serving {name} at {url}")  # no fraction: it serves until stopped (no ETA)
        ctx.log(f"serving {name} at {url}; cancel the job to stop the server\n")
        while not ctx.cancel_event.wait(1.0):
            if child.poll() is not None:
                raise JobFailed(f"The model server exited (code {child.returncode}): {_tail(log_path)}")
        raise JobCancelled()
    except JobCancelled:
        reason = f"serve job {ctx.job_id} was cancelled"
        raise
    except Exception as error:
        reason = f"serve job {ctx.job_id} failed: {str(error)[:300]}"
        raise
    finally:
        end_process_group(child)
        with session_scope(write=True) as db:
            mark_stopped(db, reason, job_id=ctx.job_id)
