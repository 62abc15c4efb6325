"""Serving a registered local version as an endpoint by starting an existing OpenAI-compatible server on it:
`transformers serve` (transformers' `serving` extra, installed with the `train` extra) or `vllm serve` where vLLM is
installed (a GPU machine). We write no model server of our own.

    serve_command(path, host, port, server="transformers") -> argv    what `rankforge models serve` runs
    start_server(...) -> Popen, wait_until_serving(url, ...)          for the CLI, the tests and the bench
    create_serve_job(db, version, ...) -> Job                         the worker's route (app.registry.handlers)
    register_served(db, name, url, model, ...) / mark_stopped(...)     the endpoint NAME-served, either route

Two routes, one server command: `rankforge models serve VERSION` (the CLI runs the server until stopped) or a
`serve` job (the version's page or POST /api/v1/endpoints/serve): the worker runs the server as the job's child on a
free port, registers or updates the endpoint VERSION-served (served_by_job_id), keeps it alive while the job runs;
cancel ends the server and marks the endpoint unavailable; a killed worker's job is retried or failed by the queue's
usual rules (its server dies with it: PR_SET_PDEATHSIG) and the endpoint reads unavailable meanwhile.

The server runs in a child process (the web process and the worker never import torch). The model's name at the
server is the checkpoint path (what GET /v1/models lists), which is what the endpoint registered for it names.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import audit
from app.errors import Conflict, EndpointError, JobCancelled, Unprocessable
from app.jobs.child import python_executable
from app.jobs.service import create_job
from app.models import Job, JobKind, JobStatus, ModelEndpoint, ModelVersion, Project, User
from app.registry.endpoints import create_endpoint, endpoint_of, unavailable_reason, update_endpoint
from app.registry.service import check_name, get_version
from trainer.results import SCORING_MODEL_KINDS

SERVERS = ("transformers", "vllm")
SERVE_PARAMS = {"server": str, "device": str, "host": str, "advertise_host": str, "endpoint_name": str,
                "start_timeout": (int, float)}  # fmt: skip
"""A serve job's params: which server, transformers serve's --device, the address it binds (127.0.0.1), the host
name others reach it at (default: the bound address), the endpoint's name (default VERSION-served), and the seconds
the server may take to list the model."""


def _server_program(server: str) -> str:
    """The server's console script beside the Python that runs trainer children (same environment)."""
    beside = Path(python_executable()).parent / server
    if beside.is_file():
        return str(beside)
    found = shutil.which(server)
    if found is None:
        extra = "pip install 'transformers[serving]'" if server == "transformers" else "pip install vllm"
        raise Unprocessable(f"The `{server}` command is not installed ({extra}).")
    return found


def serve_command(path: str, *, host: str = "127.0.0.1", port: int = 8000, server: str = "transformers",
                  device: str | None = None) -> list[str]:  # fmt: skip
    """argv of a server for the checkpoint at `path` on host:port."""
    if server not in SERVERS:
        raise Unprocessable(f"server must be one of {', '.join(SERVERS)}.")
    if not (Path(path) / "config.json").is_file():
        raise Unprocessable(f"{path} is not a local checkpoint (no config.json): only local versions are served.")
    if server == "vllm":
        return [_server_program("vllm"), "serve", path, "--host", host, "--port", str(port)]
    command = [_server_program("transformers"), "serve", path, "--host", host, "--port", str(port),
               "--log-level", "warning"]  # fmt: skip
    return command + (["--device", device] if device else [])


def server_env() -> dict[str, str]:
    """Offline by default: a local checkpoint needs nothing from the hub."""
    return os.environ | {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}


def start_server(path: str, *, host: str = "127.0.0.1", port: int = 8000, server: str = "transformers",
                 device: str | None = None, log=None) -> subprocess.Popen:  # fmt: skip
    return subprocess.Popen(serve_command(path, host=host, port=port, server=server, device=device), env=server_env(),
                            stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT if log else subprocess.DEVNULL)  # fmt: skip


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now at `host` (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def wait_until_serving(base_url: str, model: str, process: subprocess.Popen | None = None,
                       timeout: float = 180.0, cancel: threading.Event | None = None) -> None:  # fmt: skip
    """Poll GET /v1/models until it lists `model` (the server loads the checkpoint first); JobCancelled when
    `cancel` is set meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cancel is not None and cancel.is_set():
            raise JobCancelled()
        if process is not None and process.poll() is not None:
            raise EndpointError(f"The model server exited (code {process.returncode}) before it served {model}.")
        try:
            listed = httpx.get(f"{base_url}/v1/models", timeout=2).json()
            if any(m.get("id") == model for m in listed.get("data", [])):
                return
        except (httpx.HTTPError, ValueError, AttributeError):
            pass
        time.sleep(0.3)
    raise EndpointError(f"{base_url} did not list {model} within {timeout:g} s.")


# --- the endpoint a served local version becomes ----------------------------------------------------------------


def register_served(db: Session, *, name: str, url: str, model: str, project_id: int | None,
                    job_id: int | None = None) -> ModelEndpoint:  # fmt: skip
    """Register the endpoint `name` for a server just started (or point the existing one at it), checked against
    GET /v1/models, available, and owned by the serve job `job_id` (None: the CLI)."""
    existing = db.scalar(select(ModelVersion).where(ModelVersion.name == name))
    if existing is not None:
        endpoint = endpoint_of(db, existing)
        if endpoint is None:
            raise Conflict(f"{name} is a local version, not an endpoint: choose another endpoint name.")
        endpoint.served_by_job_id, endpoint.unavailable = job_id, None
        update_endpoint(db, existing, endpoint, base_url=url, model=model)
        return endpoint
    owner = db.get(Project, project_id) if project_id is not None else None
    _version, endpoint = create_endpoint(db, name=name, base_url=url, model=model, project=owner)
    endpoint.served_by_job_id = job_id
    db.flush()
    return endpoint


def mark_stopped(db: Session, reason: str, *, job_id: int | None = None, name: str | None = None) -> None:
    """The served endpoint of serve job `job_id` (or the endpoint `name`) is unavailable now, for `reason`."""
    query = select(ModelEndpoint)
    if job_id is not None:
        query = query.where(ModelEndpoint.served_by_job_id == job_id)
    else:
        query = query.join(ModelVersion, ModelVersion.id == ModelEndpoint.model_version_id).where(ModelVersion.name == name)
    for endpoint in db.scalars(query):
        endpoint.unavailable = reason[:500]


# --- the worker's route: a serve job ----------------------------------------------------------------------------


def check_serve_params(params: dict | None) -> dict:
    params = dict(params or {})
    for key, value in params.items():
        wanted = SERVE_PARAMS.get(key)
        if wanted is None:
            raise Unprocessable(f"params: unknown serve param {key!r}; known: {', '.join(SERVE_PARAMS)}.")
        if not isinstance(value, wanted) or isinstance(value, bool) or (isinstance(value, str) and len(value) > 200):
            raise Unprocessable(f"params: {key} has the wrong type or is too long.")
    if params.setdefault("server", "transformers") not in SERVERS:
        raise Unprocessable(f"params: server must be one of {', '.join(SERVERS)}.")
    if not 5 <= params.setdefault("start_timeout", 300) <= 3600:
        raise Unprocessable("params: start_timeout must be between 5 and 3600 seconds.")
    return params


def create_serve_job(db: Session, version_ref: int | str, params: dict | None = None,
                     actor: User | None = None) -> Job:  # fmt: skip
    """A queued `serve` job for a registered local version (its checkpoint directory must exist)."""
    version = get_version(db, version_ref)
    if version.kind in SCORING_MODEL_KINDS:
        raise Unprocessable(f"{version.name} is a {version.kind} model: it scores answers and does not chat; serve a "
                            "policy version.")  # fmt: skip
    if endpoint_of(db, version) is not None:
        raise Unprocessable(f"{version.name} is an endpoint already; serve a local version.")
    if not (Path(version.path) / "config.json").is_file():
        raise Unprocessable(f"{version.name} is not a full local checkpoint (no config.json in its directory): only "
                            "those can be served.")  # fmt: skip
    params = check_serve_params(params)
    name = params.setdefault("endpoint_name", f"{version.name}-served")
    check_name(name)
    other = db.scalar(select(ModelVersion).where(ModelVersion.name == name))
    if other is not None and endpoint_of(db, other) is None:
        raise Conflict(f"{name} is a local version, not an endpoint: choose another endpoint_name.")
    running = db.scalar(select(Job.id).where(Job.kind == JobKind.serve, Job.base_model_id == version.id,
                                             Job.status.in_([JobStatus.queued, JobStatus.running])))  # fmt: skip
    if running is not None:
        raise Conflict(f"{version.name} is being served already by job {running}.")
    job = create_job(db, JobKind.serve, project_id=version.project_id, params=params, base_model_id=version.id,
                     actor=actor)  # fmt: skip
    audit(db, actor, "job.create", "job", job.id, kind=JobKind.serve, model_version_id=version.id)
    return job


def serving_state(db: Session, version: ModelVersion) -> dict:
    """The version page's serving card: its newest serve job and the endpoint it registered."""
    job = db.scalar(select(Job).where(Job.kind == JobKind.serve, Job.base_model_id == version.id)
                    .order_by(Job.id.desc()).limit(1))  # fmt: skip
    name = (job.params or {}).get("endpoint_name") if job else f"{version.name}-served"
    served = db.scalar(select(ModelVersion).where(ModelVersion.name == name)) if name else None
    endpoint = endpoint_of(db, served) if served is not None else None
    return {"job": job, "endpoint_name": name, "endpoint": endpoint, "served": served,
            "unavailable": unavailable_reason(db, endpoint) if endpoint else None,
            "servable": version.kind not in SCORING_MODEL_KINDS and endpoint_of(db, version) is None
                        and (Path(version.path) / "config.json").is_file()}  # fmt: skip
