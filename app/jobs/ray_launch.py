"""The Ray launcher: a trainer job's child runs as a Ray job on a Ray cluster instead of on the worker's machine.

A job with params `{"launcher": "ray"}` (every kind that runs the trainer: training, generate, score, judge,
verify) is sent to the cluster through Ray's job submission API (the dashboard's HTTP address):

    RANKFORGE_RAY_ADDRESS (else RAY_ADDRESS)    the cluster, e.g. http://ray-head:8265 (read by the worker)
    RANKFORGE_RAY_PYTHON                        the Python on the cluster's nodes (default: the worker's own, as
                                                in the shipped image where every node runs the same image)
    RANKFORGE_RAY_ENV                           names of further worker variables the Ray job gets (FORWARD_ENV)

The Ray job's entrypoint is the same command a local child runs (`python -m trainer.run spec.json`, or
`accelerate launch --config_file ... -m trainer.run spec.json` with an accelerate_config: many GPUs inside the
one Ray job), with the resources Ray reserves for it from the job's params (RESOURCE_PARAMS: entrypoint_num_cpus,
entrypoint_num_gpus, entrypoint_memory). Ray places it on a node with those free; Rankforge schedules no GPUs.
The trainer's JSON-lines events reach the job page as for a local child: the Ray job's log is tailed (its
websocket) and fed through the same EventPump. Cancel stops the Ray job (Ray's SIGTERM, then SIGKILL); a Ray job
that fails or is stopped from outside fails the Rankforge job with its reason, noticed when its log ends or at
the latest at the next status poll (one worker heartbeat). A retried job first stops the Ray jobs an earlier
attempt of it left running (a worker that died cannot stop them itself): they carry the Rankforge job id in
their metadata.

Files. With a local artifact store the spec and its inputs are read by the Ray job from the worker's paths: the
cluster's nodes must see the worker's RANKFORGE_DATA_DIR (the same machine, a shared mount). With an object store
(RANKFORGE_ARTIFACT_STORE=s3://...) they travel through it: the worker publishes the spec and inputs as one
bundle, the Ray job's entrypoint (app.jobs.ray_entry) takes its node's cached copy, runs the trainer and publishes
the output, which the worker reads back (app.jobs.trainer_child.stage_for_ray / fetch_ray_output).

Ray is imported here lazily (only the worker, only for a Ray job): the web process never loads it; the worker
without the extra fails the job with how to install it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import queue
import secrets
import shlex
import threading
import time
from pathlib import Path

from app.config import get_settings
from app.errors import JobCancelled, JobFailed, Unprocessable
from app.jobs.child import ROOT, EventPump, child_env, python_executable
from trainer.threads import THREADS_ENV, TOKEN_CACHE_ENV

ADDRESS_ENVS = ("RANKFORGE_RAY_ADDRESS", "RAY_ADDRESS")
PYTHON_ENV = "RANKFORGE_RAY_PYTHON"
RESOURCE_PARAMS = {
    "entrypoint_num_cpus": "with launcher ray: CPUs Ray reserves for the job (a number, default 0)",
    "entrypoint_num_gpus": "with launcher ray: GPUs Ray reserves for the job (a number; CUDA_VISIBLE_DEVICES is set "
    "to them; with an accelerate_config, its num_processes)",
    "entrypoint_memory": "with launcher ray: memory Ray reserves for the job, in bytes",
}
"""Job params of the Ray launcher, passed to JobSubmissionClient.submit_job under the same names."""
METADATA_KEY = "rankforge_job_id"
INSTANCE_KEY = "rankforge_instance"
"""With METADATA_KEY on every Ray job: which Rankforge (its database) the job id belongs to, so a retry never
stops another deployment's Ray job of the same id on a shared cluster."""
STOP_WAIT_SECONDS = 30.0
"""How long a cancel waits for the stopped Ray job to end (Ray sends SIGTERM, then SIGKILL after its own grace)."""
PASSED_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME", "HF_ENDPOINT")
"""Variables of the worker's environment the Ray job gets too (beside the trainer's own RANKFORGE_TRAINER_*);
the rest of it (database URL, secrets) stays on the worker."""
FORWARD_ENV = "RANKFORGE_RAY_ENV"
"""Comma-separated names of further worker variables a Ray job gets (e.g. AWS_ENDPOINT_URL,AWS_REGION for an S3
store). Ray shows a job's runtime_env on its dashboard: give the nodes their store credentials themselves where
you can, rather than forwarding secrets."""


def ray_address() -> str | None:
    for name in ADDRESS_ENVS:
        if os.environ.get(name):
            return os.environ[name]
    return None


def check_resource_params(params: dict) -> None:
    """entrypoint_num_cpus / _gpus / _memory: non-negative numbers (memory a whole number of bytes)."""
    for name in RESOURCE_PARAMS:
        value = params.get(name)
        if value is None:
            continue
        whole = name == "entrypoint_memory"
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)) or value < 0:
            kind = "a whole number of bytes" if whole else "a number"
            raise Unprocessable(f"params.{name} must be {kind}, 0 or more.")
    if params.get("launcher", "python") != "ray" and any(params.get(name) is not None for name in RESOURCE_PARAMS):
        raise Unprocessable(f"params.{'/'.join(RESOURCE_PARAMS)} are for launcher ray.")


def ray_env(command_is_accelerate: bool, resources: dict) -> dict[str, str]:
    """The Ray job's environment variables: where the code is, the trainer's settings, the HF offline flags."""
    local = child_env()
    env = {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", TOKEN_CACHE_ENV: local[TOKEN_CACHE_ENV]}
    forwarded = {name.strip() for name in os.environ.get(FORWARD_ENV, "").split(",") if name.strip()}
    env |= {k: v for k, v in local.items() if k.startswith("RANKFORGE_TRAINER_") or k in PASSED_ENV or k in forwarded}
    cpus = resources.get("entrypoint_num_cpus")
    if THREADS_ENV not in env and cpus and not command_is_accelerate:
        env[THREADS_ENV] = str(max(1, int(cpus)))  # the node's CPUs are not the job's: size threads to the reservation
    return env


def _client(address: str):
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as error:
        raise JobFailed(
            "launcher ray needs Ray's job submission client on the worker: pip install 'rankforge[ray]' "
            f"(ray[default]); {error}"
        ) from error
    try:
        return JobSubmissionClient(address)
    except Exception as error:  # noqa: BLE001 - ConnectionError, ValueError for a bad address, ...
        raise JobFailed(f"The Ray cluster at {address} is unreachable: {error}") from error


def job_metadata(job_id: int) -> dict[str, str]:
    """The metadata that marks a Ray job as this Rankforge's job `job_id` (the instance: a hash of the database
    URL, never the URL itself)."""
    instance = hashlib.sha256(get_settings().database_url.encode()).hexdigest()[:16]
    return {METADATA_KEY: str(job_id), INSTANCE_KEY: instance}


def stop_earlier_attempts(client, job_id: int) -> list[str]:
    """Stop the Ray jobs an earlier attempt of this job left running (its worker died); their submission ids."""
    stopped, mine = [], job_metadata(job_id)
    for info in client.list_jobs():
        metadata = info.metadata or {}
        if all(metadata.get(k) == v for k, v in mine.items()) and not info.status.is_terminal():
            with contextlib.suppress(Exception):
                client.stop_job(info.submission_id)
                stopped.append(info.submission_id)
    return stopped


class LogTail(threading.Thread):
    """Tails the Ray job's log (Ray's websocket) into a queue of lines; None at its end. `complete` tells whether
    the stream ran to the job's end (else the caller reads the rest with get_job_logs from `chars` on)."""

    def __init__(self, client, submission_id: str):
        super().__init__(daemon=True, name=f"ray-log-{submission_id}")
        self.client, self.submission_id = client, submission_id
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.chars, self.complete, self.partial = 0, False, ""

    def run(self) -> None:
        try:
            asyncio.run(self._tail())
            self.complete = True
        except Exception:  # noqa: BLE001 - the caller catches up from get_job_logs
            pass
        self.lines.put(None)

    async def _tail(self) -> None:
        async for chunk in self.client.tail_job_logs(self.submission_id):
            self.chars += len(chunk)
            self.feed(chunk)

    def feed(self, text: str) -> None:
        *whole, self.partial = (self.partial + text).split("\n")
        for line in whole:
            self.lines.put(line)

    def catch_up(self) -> None:
        """After the stream broke off: the part of the job's whole log it had not delivered."""
        text = self.client.get_job_logs(self.submission_id)
        self.feed(text[self.chars :])
        self.chars = len(text)

    def end(self) -> None:
        """The job has ended: its last line even without a newline."""
        if self.partial:
            self.lines.put(self.partial)
            self.partial = ""


def run_ray_child(ctx, command: list[str], work: Path, resources: dict) -> dict:
    """Run `command` as a Ray job under job `ctx` (app.jobs.runner.JobContext), like app.jobs.child.run_child:
    its events become the job's progress, metrics and log; returns its `done` event. JobCancelled on cancel
    (the Ray job stopped), JobFailed when the cluster is unreachable or the Ray job fails or is stopped."""
    address = ray_address()
    if not address:
        raise JobFailed(f"launcher ray needs the Ray cluster's address: set {ADDRESS_ENVS[0]} (or {ADDRESS_ENVS[1]}) "
                        "on the worker, e.g. http://ray-head:8265 (the dashboard's address).")  # fmt: skip
    client = _client(address)
    from ray.job_submission import JobStatus

    try:
        for earlier in stop_earlier_attempts(client, ctx.job_id):
            ctx.log(f"Stopped Ray job {earlier}, left running by an earlier attempt of this job.\n")
        submission_id = f"rankforge-job-{ctx.job_id}-{secrets.token_hex(4)}"
        resources = {k: v for k, v in resources.items() if k in RESOURCE_PARAMS and v is not None}
        env = ray_env("accelerate.commands.launch" in command, resources)
        client.submit_job(entrypoint=shlex.join(command), submission_id=submission_id,
                          runtime_env={"env_vars": env}, metadata=job_metadata(ctx.job_id), **resources)  # fmt: skip
    except JobFailed:
        raise
    except Exception as error:  # noqa: BLE001 - the cluster refused the submission (or went away)
        raise JobFailed(f"The Ray cluster at {address} did not take the job: {error}") from error
    (work / "ray_job.txt").write_text(f"{submission_id}\n{address}\n")
    ctx.log(f"Submitted to the Ray cluster at {address} as Ray job {submission_id}"
            f"{' with ' + ', '.join(f'{k}={v}' for k, v in resources.items()) if resources else ''}.\n")  # fmt: skip

    tail = LogTail(client, submission_id)
    tail.start()
    pump = EventPump(ctx)
    every = get_settings().worker_heartbeat_seconds
    give_up_after = get_settings().worker_stale_seconds
    status, last_poll, unreachable_since = None, time.monotonic(), None
    tail_open = True
    try:
        while True:
            if ctx.cancel_event.is_set():
                raise JobCancelled()  # the Ray job is stopped below
            try:
                line = tail.lines.get(timeout=0.2)
            except queue.Empty:
                line = ""
            if line is None:
                tail_open = False
            else:
                pump.feed(line)
            pump.flush()
            # poll the job's status once a heartbeat, and at once when its log stream has ended
            if time.monotonic() - last_poll < every and (tail_open or not tail.complete):
                continue
            last_poll = time.monotonic()
            try:
                status = client.get_job_status(submission_id)
                if not tail_open and not tail.complete:
                    tail.catch_up()  # the stream broke off: read the log from the cluster
                unreachable_since = None
            except Exception as error:  # noqa: BLE001 - retried until the worker's stale limit
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since > give_up_after:
                    raise JobFailed(
                        f"Lost the Ray cluster at {address} while Ray job {submission_id} ran: {error}"
                    ) from error
                continue
            if status.is_terminal():
                break
    except BaseException:
        if status is None or not status.is_terminal():
            _stop(client, submission_id)  # the Ray job ends with its Rankforge job (cancel, failure, shutdown)
        raise
    # the job has ended and its log stream with it; what the stream did not deliver is read from the cluster
    tail.join(10)
    if not tail.complete:
        with contextlib.suppress(Exception):
            tail.catch_up()
    tail.end()
    for line in _drain(tail.lines):
        pump.feed(line)
    pump.flush(final=True)
    if status == JobStatus.SUCCEEDED and pump.done is not None:
        return pump.done
    message = ""
    with contextlib.suppress(Exception):  # Ray's reason, then the end of the log it quotes
        first, _, logs = (client.get_job_info(submission_id).message or "").partition("\n")
        message = first.rstrip(":") + (f": ...{logs.strip()[-1500:]}" if logs.strip() else "")
    if status == JobStatus.STOPPED:
        raise JobFailed(f"Ray job {submission_id} was stopped outside Rankforge: {message or 'no reason given'}")
    if status == JobStatus.FAILED:
        raise JobFailed(pump.error or f"Ray job {submission_id} failed: {message or 'no reason given'}")
    raise JobFailed(pump.error or f"Ray job {submission_id} ended ({status}) without reporting its result.")


def _drain(lines: queue.Queue) -> list[str]:
    drained = []
    with contextlib.suppress(queue.Empty):
        while True:
            line = lines.get_nowait()
            if line is not None:
                drained.append(line)
    return drained


def _stop(client, submission_id: str) -> None:
    """Stop the Ray job and wait (bounded) until the cluster reports it ended."""
    with contextlib.suppress(Exception):
        client.stop_job(submission_id)
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        while time.monotonic() < deadline and not client.get_job_status(submission_id).is_terminal():
            time.sleep(0.2)


def ray_python() -> str:
    return os.environ.get(PYTHON_ENV) or python_executable()
