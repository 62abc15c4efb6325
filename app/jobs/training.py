"""Training jobs: create them with sane defaults, run them as a child process, register what they make.

    create_training_job(db, project, kind, ...)  -> Job   (web/CLI: resolves defaults, validates params)
    run_training_job(ctx)                        -> dict  (worker: {"model_version_id", "metrics", "dataset_id"})

The child is `python -m trainer.run spec.json` (or `accelerate launch ... -m trainer.run spec.json`), started in
its own process group so cancel can end it and everything it spawned: SIGTERM, then SIGKILL after 5 s. It also
gets SIGKILL from the kernel when the worker dies, so a retried job never races an orphan for its output_dir.
The trainer writes output_dir atomically; a version is registered only when output_dir and its manifest exist.
A retry after a worker crash is idempotent: a finished output_dir is registered instead of trained again.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import get_settings
from app.db import session_scope
from app.errors import Unprocessable
from app.jobs.service import create_job
from app.models import (
    Comparison,
    Completion,
    DatasetSnapshot,
    Job,
    ModelVersion,
    Project,
    Prompt,
    User,
)
from app.projects.service import audit
from app.registry.service import get_version, newest_version

ROOT = Path(__file__).resolve().parents[2]
TRAINING_KINDS = ("reward", "dpo", "kto", "ppo", "grpo", "rloo", "generate", "score")
SNAPSHOT_FORMAT = {"reward": "pairs", "dpo": "pairs", "kto": "kto"}
"""Kinds that train on a dataset snapshot, and its format (the others read the project's prompts)."""
PROMPT_KINDS = ("ppo", "grpo", "rloo", "generate")
APP_PARAMS = {
    "launcher": "python or accelerate (accelerate launch runs the trainer on many GPUs or nodes)",
    "accelerate_config": "accelerate config file (with launcher accelerate)",
    "seed": "random seed of the run",
    "snapshot": "spec of the fresh snapshot taken when no dataset is given (format, filters, split)",
    "arena": "generate: also pair each new completion with the newest completion of every other model",
    "max_prompts": "generate/ppo/grpo/rloo: use at most this many of the project's prompts (newest first)",
}
"""Job params the app reads itself; every other key is a trainer hyperparameter (trainer.params)."""
KEY_PARAMS = {
    "reward": (
        "learning_rate",
        "num_train_epochs",
        "max_steps",
        "per_device_train_batch_size",
        "margin_coefficient",
    ),
    "dpo": ("learning_rate", "num_train_epochs", "max_steps", "beta", "per_device_train_batch_size"),
    "kto": ("learning_rate", "num_train_epochs", "max_steps", "beta", "per_device_train_batch_size"),
    "ppo": ("learning_rate", "max_steps", "kl_coef", "max_new_tokens", "temperature"),
    "grpo": ("learning_rate", "max_steps", "num_generations", "beta", "max_completion_length"),
    "rloo": ("learning_rate", "max_steps", "num_generations", "beta", "max_completion_length"),
    "generate": ("num_completions", "temperature", "top_p", "max_new_tokens"),
    "score": ("batch_size",),
}
"""The few hyperparameters that matter, shown on the training page and in `rankforge train --help` (the rest keep their defaults)."""
CANCEL_GRACE_SECONDS = 5.0
PROGRESS_EVERY_SECONDS = 0.5
LOG_EVERY_SECONDS = 2.0


class TrainingFailed(Exception):
    """The trainer child failed; the message is its own error event (or its stderr tail)."""


# ---------------------------------------------------------------------------------------------------- create


def split_params(kind: str, params: dict | None) -> tuple[dict, dict]:
    """(app params, trainer params), the trainer's validated by trainer.params (torch-free): clear 422s."""
    from trainer.params import parse_params

    params = dict(params or {})
    app_params = {k: params.pop(k) for k in list(params) if k in APP_PARAMS}
    if app_params.get("launcher", "python") not in ("python", "accelerate"):
        raise Unprocessable("params.launcher must be 'python' or 'accelerate'.")
    try:
        parse_params(kind, params)
    except ValueError as error:
        raise Unprocessable(f"params: {error}") from error
    return app_params, params


def _resolve_version(db: Session, ref, kind: str, project: Project, role: str) -> ModelVersion | None:
    if ref not in (None, ""):
        return get_version(db, ref, kind=kind)
    return newest_version(db, kind, project.id)


def needs_reward_model(kind: str, trainer_params: dict) -> bool:
    if kind in ("ppo", "score"):
        return True
    if kind in ("grpo", "rloo"):
        rewards = trainer_params.get("rewards")
        return rewards is None or any(r.get("name") == "reward_model" for r in rewards if isinstance(r, dict))
    return False


def create_training_job(db: Session, project: Project, kind: str, *, dataset_id: int | None = None,
                        base_model=None, reward_model=None, params: dict | None = None,
                        actor: User | None = None) -> Job:  # fmt: skip
    """Queue a training job with every default resolved now, so the job page shows what will run."""
    kind = str(kind)
    if kind not in TRAINING_KINDS:
        raise Unprocessable(f"Unknown training kind {kind!r}; known: {', '.join(TRAINING_KINDS)}.")
    app_params, trainer_params = split_params(kind, params)
    if dataset_id is not None:
        snapshot = db.get(DatasetSnapshot, dataset_id)
        if snapshot is None or snapshot.project_id != project.id:
            raise Unprocessable(f"No dataset {dataset_id} in project {project.slug}.")
        wanted = SNAPSHOT_FORMAT.get(kind)
        if wanted and snapshot.format != wanted:
            raise Unprocessable(
                f"A {kind} job needs a {wanted} snapshot; dataset {dataset_id} is {snapshot.format}."
            )
        if snapshot.status == "failed":
            raise Unprocessable(f"Dataset {dataset_id} failed to build: {snapshot.error}")
    elif kind in SNAPSHOT_FORMAT:
        from app.datasets.service import parse_spec

        spec = dict(app_params.get("snapshot") or {}) | {"format": SNAPSHOT_FORMAT[kind]}
        app_params["snapshot"] = parse_spec(spec).model_dump(mode="json")  # validated now, built by the job
    base = None
    if kind != "score":
        base = _resolve_version(db, base_model, "policy", project, "base model")
        if base is None:
            raise Unprocessable("No policy model version is registered: register one (`rankforge models add` or "
                                "`rankforge models init-tiny`) or pass base_model.")  # fmt: skip
    reward = None
    if needs_reward_model(kind, trainer_params) or reward_model not in (None, ""):
        reward = _resolve_version(db, reward_model, "reward", project, "reward model")
        if reward is None:
            raise Unprocessable(f"A {kind} job needs a reward model version and none is registered: train one "
                                "(a reward job) or pass reward_model.")  # fmt: skip
    job = create_job(db, kind, project_id=project.id, params=app_params | trainer_params, dataset_id=dataset_id,
                     base_model_id=base.id if base else None, reward_model_id=reward.id if reward else None,
                     actor=actor)  # fmt: skip
    audit(db, actor, "job.create", "job", job.id, kind=kind)
    return job


# ---------------------------------------------------------------------------------------------------- run


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


def write_prompts(db: Session, project: Project, path: Path, limit: int | None) -> int:
    query = select(Prompt).where(Prompt.project_id == project.id).order_by(Prompt.id.desc())
    if limit:
        query = query.limit(int(limit))
    n = 0
    with open(path, "w", encoding="utf-8") as handle:
        for prompt in db.scalars(query):
            handle.write(json.dumps({"prompt_id": prompt.id, "prompt": _prompt_value(prompt)}) + "\n")
            n += 1
    if n == 0:
        raise TrainingFailed(f"Project {project.slug} has no prompts.")
    return n


def write_score_prompts(db: Session, project: Project, path: Path) -> int:
    """Every prompt of an open comparison with its completions, for the reward model to score."""
    comparisons = db.scalars(select(Comparison).where(Comparison.project_id == project.id, ~Comparison.is_gold,
                                                      Comparison.n_judgments < Comparison.required))  # fmt: skip
    by_prompt: dict[int, set[int]] = collections.defaultdict(set)
    for comparison in comparisons:
        by_prompt[comparison.prompt_id].update(comparison.completion_ids)
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
    if not by_prompt:
        raise TrainingFailed(f"Project {project.slug} has no open comparisons to score.")
    return len(by_prompt)


@dataclass(frozen=True)
class SnapshotRef:
    id: int
    path: Path
    sha256: str | None


def ensure_snapshot(ctx, job_id: int) -> SnapshotRef | None:
    """The job's dataset: the one given, or a fresh snapshot built inline (recorded on the job first)."""
    from app.datasets.service import build_snapshot, get_snapshot, snapshot_dir

    with session_scope(write=True) as db:
        job = db.get(Job, job_id)
        if job.dataset_id is None:
            if job.kind not in SNAPSHOT_FORMAT:
                return None
            spec = job.params.get("snapshot") or {"format": SNAPSHOT_FORMAT[job.kind]}
            snapshot = DatasetSnapshot(project_id=job.project_id, format=spec["format"], spec=spec, status="building",
                                       job_id=job.id, created_by_id=job.created_by_id)  # fmt: skip
            db.add(snapshot)
            db.flush()
            snapshot.path = str(snapshot_dir(snapshot))
            job.dataset_id = snapshot.id
        dataset_id = job.dataset_id
    with session_scope() as db:
        snapshot = get_snapshot(db, dataset_id)
        if snapshot.status != "ready":
            if snapshot.job_id not in (job_id, None) and snapshot.status == "building":
                raise TrainingFailed(f"Dataset {dataset_id} is still being built by job {snapshot.job_id}.")
            ctx.progress(0.0, f"building dataset snapshot {dataset_id}")
            try:
                build_snapshot(db, snapshot, progress=lambda f, m: ctx.progress(0.0, f"snapshot: {m}"))
            except Exception as error:
                db.rollback()
                with session_scope(write=True) as failed:
                    row = failed.get(DatasetSnapshot, dataset_id)
                    row.status, row.error = "failed", str(error)[:2000]
                raise TrainingFailed(f"Building dataset snapshot {dataset_id} failed: {error}") from error
        return SnapshotRef(snapshot.id, Path(snapshot.path), snapshot.sha256)


def child_command(spec_path: Path, app_params: dict) -> list[str]:
    python = get_settings().python_executable or sys.executable
    if app_params.get("launcher") == "accelerate":
        config = (
            ["--config_file", str(app_params["accelerate_config"])]
            if app_params.get("accelerate_config")
            else []
        )
        return [python, "-m", "accelerate.commands.launch", *config, "-m", "trainer.run", str(spec_path)]
    return [python, "-m", "trainer.run", str(spec_path)]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    # One BLAS thread per process: much faster for small models on small, shared CPUs (override for big ones).
    env["OMP_NUM_THREADS"] = os.environ.get("RANKFORGE_TRAINER_OMP_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the worker dies (Linux), so no orphan trains on."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def end_process_group(child: subprocess.Popen, grace: float = CANCEL_GRACE_SECONDS) -> None:
    """SIGTERM the child's process group, SIGKILL whatever is left after `grace` seconds."""
    if child.poll() is not None:
        return
    try:
        os.killpg(child.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(grace)
    with contextlib.suppress(ProcessLookupError):  # the group may outlive its leader (accelerate's ranks)
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


class ChildReader:
    """Reads the child's stdout lines into a queue and keeps a tail of its stderr (two small threads)."""

    def __init__(self, child: subprocess.Popen):
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=60)
        self.stderr_done = threading.Event()
        threading.Thread(target=self._pump_stdout, args=(child.stdout,), daemon=True).start()
        threading.Thread(target=self._pump_stderr, args=(child.stderr,), daemon=True).start()

    def _pump_stdout(self, stream) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)  # end of output

    def _pump_stderr(self, stream) -> None:
        for line in stream:
            self.stderr_tail.append(line.rstrip("\n"))
        self.stderr_done.set()


def run_child(ctx, command: list[str], cwd: Path) -> dict:
    """Run the trainer child to its end, reporting its events; returns the done event."""
    child = subprocess.Popen(command, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, bufsize=1, start_new_session=True, preexec_fn=_die_with_parent)  # fmt: skip
    (cwd / "child.pid").write_text(str(child.pid))
    reader = ChildReader(child)
    done = error = None
    log_lines: list[str] = []
    pending_progress: tuple[float, str | None] | None = None
    last_progress = last_log = 0.0
    try:
        stdout_open = True
        while stdout_open:
            if ctx.cancel_event.is_set():
                end_process_group(child)
                from app.jobs.worker import Cancelled

                raise Cancelled()
            try:
                line = reader.lines.get(timeout=0.2)
            except queue.Empty:
                line = ""
            if line is None:
                stdout_open = False
            elif line:
                event = _parse_event(line)
                if event is None:
                    log_lines.append(line)
                elif event["event"] == "progress":
                    pending_progress = (float(event.get("progress", 0.0)), event.get("message"))
                elif event["event"] == "metrics":
                    ctx.metrics(int(event.get("step", 0)), event.get("metrics") or {})
                elif event["event"] == "log":
                    log_lines.append(str(event.get("message", "")))
                elif event["event"] == "done":
                    done = event
                elif event["event"] == "error":
                    error = str(event.get("message", "trainer error"))
            now = time.monotonic()
            if pending_progress and (now - last_progress >= PROGRESS_EVERY_SECONDS or not stdout_open):
                ctx.progress(min(pending_progress[0], 0.99), pending_progress[1])
                pending_progress, last_progress = None, now
            if log_lines and (now - last_log >= LOG_EVERY_SECONDS or not stdout_open):
                ctx.log("\n".join(log_lines) + "\n")
                log_lines, last_log = [], now
        returncode = child.wait()
    finally:
        end_process_group(child)
    reader.stderr_done.wait(5)
    stderr = "\n".join(reader.stderr_tail)
    if stderr:
        ctx.log(stderr[-4000:] + "\n")
    if returncode != 0 or done is None:
        raise TrainingFailed(
            error or f"The trainer exited with code {returncode}: {stderr[-1500:] or 'no output'}"
        )
    return done


def _parse_event(line: str) -> dict | None:
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


def _read_manifest(output_dir: Path) -> dict | None:
    path = output_dir / "manifest.json"
    if not output_dir.is_dir() or not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def run_training_job(ctx) -> dict:
    """The worker's entry for every training kind."""
    from trainer.params import DEFAULTS

    with session_scope() as db:
        job = db.get(Job, ctx.job_id)
        project = db.get(Project, job.project_id)
        kind, params = job.kind, dict(job.params or {})
        work = job_dir(job.id)
        output_dir = output_dir_for(job, project)
        name = output_name(job, project)
        base = db.get(ModelVersion, job.base_model_id) if job.base_model_id else None
        reward = db.get(ModelVersion, job.reward_model_id) if job.reward_model_id else None
        if kind != "score" and base is None:
            raise TrainingFailed("The job's base model version is gone (deleted from the registry).")
        base_path, reward_path = (base.path if base else None), (reward.path if reward else None)
    app_params = {k: params.pop(k) for k in list(params) if k in APP_PARAMS}
    work.mkdir(parents=True, exist_ok=True)
    snapshot = ensure_snapshot(ctx, ctx.job_id)

    manifest = _read_manifest(output_dir)
    if manifest is None or manifest.get("job_id") != ctx.job_id:
        if output_dir.exists():
            raise TrainingFailed(f"{output_dir} exists but is not this job's output; not overwriting it.")
        for stale in output_dir.parent.glob(f"{output_dir.name}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed attempt (its child died with it)
        prompts_path = None
        with session_scope() as db:
            project = db.get(Project, project.id)
            if kind == "score":
                prompts_path = work / "prompts.jsonl"
                write_score_prompts(db, project, prompts_path)
            elif kind in PROMPT_KINDS and (snapshot is None or kind == "generate"):
                prompts_path = work / "prompts.jsonl"
                write_prompts(db, project, prompts_path, app_params.get("max_prompts"))
        spec = {
            "kind": kind, "job_id": ctx.job_id, "base_model": base_path, "reward_model": reward_path,
            "dataset_path": str(Path(snapshot.path)) if snapshot else None,
            "prompts_path": str(prompts_path) if prompts_path else None, "output_dir": str(output_dir),
            "params": DEFAULTS[kind] | params, "launcher": app_params.get("launcher", "python"),
            "seed": int(app_params.get("seed", 0) or 0),
        }  # fmt: skip
        spec_path = work / "spec.json"
        spec_path.write_text(json.dumps(spec, indent=2))
        ctx.progress(0.0, f"starting {kind}")
        run_child(ctx, child_command(spec_path, app_params), work)
        manifest = _read_manifest(output_dir)
        if manifest is None:
            raise TrainingFailed(f"The trainer reported success but {output_dir}/manifest.json is missing.")
    else:
        ctx.log(f"{output_dir} was finished by an earlier attempt: registering it.\n")

    result = {"metrics": manifest.get("metrics") or {}, "dataset_id": snapshot.id if snapshot else None}
    with session_scope(write=True) as db:
        job = db.get(Job, ctx.job_id)
        if kind == "generate":
            result |= store_generations(db, job, output_dir)
        elif kind == "score":
            result |= store_scores(db, job, output_dir)
        else:
            version = register_output(db, job, name, output_dir, manifest, snapshot)
            result["model_version_id"] = version.id
        job.result = result  # with the rows above, in one transaction: a retry sees them done
    return result


def register_output(db: Session, job: Job, name: str, output_dir: Path, manifest: dict,
                    snapshot: SnapshotRef | None) -> ModelVersion:  # fmt: skip
    existing = db.scalar(select(ModelVersion).where(ModelVersion.job_id == job.id))
    if existing is not None:
        return existing
    version = ModelVersion(
        name=name, kind=manifest["kind"], path=str(output_dir), project_id=job.project_id,
        base_version_id=job.base_model_id, job_id=job.id, dataset_id=snapshot.id if snapshot else None,
        dataset_sha256=manifest.get("dataset_sha256") or (snapshot.sha256 if snapshot else None),
        metrics=manifest.get("metrics") or {}, manifest=manifest,
    )  # fmt: skip
    db.add(version)
    db.flush()
    return version


def store_generations(db: Session, job: Job, output_dir: Path) -> dict:
    """generations.jsonl -> completions of the base version, grouped into new comparisons."""
    if job.result and "completion_ids" in job.result:
        return {k: job.result[k] for k in ("completion_ids", "comparison_ids")}
    project = db.get(Project, job.project_id)
    version = db.get(ModelVersion, job.base_model_id)
    group = 2 if project.mode == "pairwise" else 4
    completion_ids, comparison_ids = [], []
    with open(output_dir / "generations.jsonl", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    prompts = {
        p.id: p for p in db.scalars(select(Prompt).where(Prompt.id.in_([r["prompt_id"] for r in rows])))
    }
    for row in rows:
        prompt = prompts.get(row["prompt_id"])
        if prompt is None:
            continue
        fresh = [Completion(prompt_id=prompt.id, text=c["text"], model_name=version.name, model_version_id=version.id,
                            params=c.get("params") or {},
                            meta={"job_id": job.id, "finish_reason": c.get("finish_reason")})
                 for c in row["completions"]]  # fmt: skip
        db.add_all(fresh)
        db.flush()
        completion_ids += [c.id for c in fresh]
        sets = [[c.id for c in fresh[i : i + group]] for i in range(0, len(fresh), group)]
        sets = [s for s in sets if len(s) >= 2]
        if job.params.get("arena"):
            opponents = _newest_by_model(db, prompt.id, exclude=version.name)
            sets += [[fresh[0].id, other] for other in opponents] if fresh else []
        for ids in sets:
            comparison = Comparison(project_id=project.id, prompt_id=prompt.id, completion_ids=ids,
                                    required=project.overlap, priority=prompt.priority, batch=f"job-{job.id}",
                                    meta={"job_id": job.id})  # fmt: skip
            db.add(comparison)
            db.flush()
            comparison_ids.append(comparison.id)
    return {"completion_ids": completion_ids, "comparison_ids": comparison_ids}


def _newest_by_model(db: Session, prompt_id: int, exclude: str) -> list[int]:
    newest: dict[str, int] = {}
    for completion_id, model in db.execute(select(Completion.id, Completion.model_name)
                                           .where(Completion.prompt_id == prompt_id).order_by(Completion.id)):  # fmt: skip
        if model and model != exclude:
            newest[model] = completion_id
    return list(newest.values())


def store_scores(db: Session, job: Job, output_dir: Path) -> dict:
    """scores.jsonl -> each open comparison's score_gap: the smallest score difference among its completions
    (small gap: the reward model is unsure, so raters see it first)."""
    scores = {}
    with open(output_dir / "scores.jsonl", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                scores[row["completion_id"]] = float(row["score"])
    scored = 0
    for comparison in db.scalars(select(Comparison).where(Comparison.project_id == job.project_id)):
        values = sorted(scores[c] for c in comparison.completion_ids if c in scores)
        if len(values) == len(comparison.completion_ids) >= 2:
            comparison.score_gap = min(b - a for a, b in zip(values, values[1:], strict=False))
            scored += 1
    return {"scored_comparisons": scored}
