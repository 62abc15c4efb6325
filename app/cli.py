"""The `rankforge` command."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import typer

from app.cli_commands import fail
from app.training.kinds import TRAINING_KINDS

app = typer.Typer(help="Rankforge: collect human feedback on model outputs and turn it into better models.",
                  no_args_is_help=True, add_completion=False)  # fmt: skip
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
user_app = typer.Typer(help="Users.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")):
    """Apply the migrations (SQLite or PostgreSQL, from RANKFORGE_DATABASE_URL)."""
    from app.migrate import upgrade

    upgrade(revision=revision)
    typer.echo("Database is up to date.")


@db_app.command("backup")
def db_backup(target: str = typer.Argument(None, metavar="[TARGET]",
                                           help="A new directory, or an fsspec URL (s3://bucket/prefix/name); "
                                           "default: the artifact store's backups/<UTC time>.")):  # fmt: skip
    """Back up the database (SQLite: online backup API; PostgreSQL: pg_dump custom format) with a manifest listing
    every dataset snapshot and model file of the artifact store with its sha256. Safe while the server runs. To a
    URL (or the default, with an object store) through the artifact store: visible only once complete."""
    from app.backup import backup, backup_to_store, default_location
    from app.config import get_settings
    from app.errors import BackupError
    from app.store import is_url

    settings = get_settings()
    path = target or default_location()
    try:
        if is_url(path):
            manifest = backup_to_store(settings.database_url, settings.data_dir, path)
        else:
            manifest = backup(settings.database_url, settings.data_dir, Path(path))
    except BackupError as error:
        fail(str(error.detail))
    files = sum(len(a["files"]) for a in manifest["artifacts"])
    missing = [a["path"] for a in manifest["artifacts"] if a.get("missing")]
    typer.echo(f"Backed up {manifest['dialect']} database ({manifest['counts']['judgments']} judgments, schema "
               f"{manifest['schema_revision']}) to {path}; manifest lists {len(manifest['artifacts'])} artifacts, "
               f"{files} files.")  # fmt: skip
    if missing:
        typer.secho(f"Note: {len(missing)} artifacts the database points at are missing from the store: "
                    + ", ".join(missing[:10]), err=True, fg=typer.colors.YELLOW)  # fmt: skip


@db_app.command("restore")
def db_restore(path: str = typer.Argument(..., help="A directory or an fsspec URL written by `rankforge db backup`."),
               force: bool = typer.Option(False, "--force", help="Replace a target database that is not empty.")):  # fmt: skip
    """Restore a backup into RANKFORGE_DATABASE_URL (a new, empty database unless --force), then verify the
    artifact store against the manifest's sha256s. Exit 3 when artifacts are missing or changed."""
    from app.backup import restore_from
    from app.config import get_settings
    from app.errors import BackupError

    settings = get_settings()
    try:
        manifest, check = restore_from(settings.database_url, settings.data_dir, path, force=force)
    except BackupError as error:
        fail(str(error.detail))
    typer.echo(f"Restored the {manifest['dialect']} database from {path} ({manifest['counts']['judgments']} "
               f"judgments, schema {manifest['schema_revision']}; run `rankforge db upgrade` if this version is "
               f"newer). Artifacts: {check.checked} files checked.")  # fmt: skip
    if not check.ok:
        for label, paths in (("missing", check.missing), ("changed", check.changed)):
            if paths:
                typer.secho(f"{len(paths)} artifact files {label}: " + ", ".join(paths[:20]), err=True,
                            fg=typer.colors.RED)  # fmt: skip
        raise typer.Exit(3)


@app.command()
def serve(host: str = typer.Option(None), port: int = typer.Option(None), workers: int = typer.Option(1),
          upgrade_db: bool = typer.Option(True, help="Run migrations first.")):  # fmt: skip
    """Run the web app (uvicorn)."""
    from app.config import get_settings
    from app.migrate import upgrade
    from app.serving import run_server

    settings = get_settings()
    if upgrade_db:
        upgrade()
    run_server(host or settings.host, port or settings.port, workers)


def _read_password(password: str | None) -> str:
    if password is None:
        if sys.stdin.isatty():
            password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        else:
            password = sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        fail("The password must have at least 8 characters.")
    return password


@user_app.command("create")
def user_create(name: str, role: str = typer.Option(..., help="admin | annotator | engineer"),
                password: str = typer.Option(None, help="Read from stdin when omitted.")):  # fmt: skip
    """Create a user."""
    from app.db import session_scope
    from app.errors import RankforgeError
    from app.users.service import create_user

    secret = _read_password(password)
    try:
        with session_scope(write=True) as db:
            user = create_user(db, name, role, secret, actor=None)
            typer.echo(f"Created {user.role} {user.username} (id {user.id}).")
    except RankforgeError as error:
        fail(str(error.detail))


@token_app.command("create")
def token_create(name: str = typer.Argument(..., help="The user the token acts as."),
                 label: str = typer.Option("cli", help="A name for the token.")):  # fmt: skip
    """Create an API token for a user and print it (shown once)."""
    from sqlalchemy import select

    from app.auth.service import create_api_token
    from app.db import session_scope
    from app.models import User

    with session_scope(write=True) as db:
        user = db.scalar(select(User).where(User.username == name))
        if user is None:
            fail(f"No user {name!r}.")
        token = create_api_token(db, user, label)
    typer.echo(token)


@app.command("import")
def import_cmd(project: str, file: Path, format: str = typer.Option("native", "--format", "-f"),
               gold: bool = typer.Option(False, help="Rankings in the file make gold items.")):  # fmt: skip
    """Import prompts and completions into PROJECT (slug or id)."""
    from app.config import get_settings
    from app.db import session_scope
    from app.errors import ImportValidationError, RankforgeError
    from app.imports.parsers import check_file_size
    from app.imports.service import import_stream
    from app.projects.service import get_project

    if not file.is_file():
        fail(f"No file {file}.")
    try:
        # read line by line, as the API reads a spooled upload (same limit: RANKFORGE_MAX_IMPORT_BYTES)
        check_file_size(file.stat().st_size, get_settings().max_import_bytes, format)
        with file.open("rb") as source, session_scope(write=True) as db:
            result = import_stream(db, get_project(db, project), source, format, None, gold=gold)
    except ImportValidationError as error:
        fail(str(error), code=2)
    except RankforgeError as error:
        fail(str(error.detail))
    typer.echo(json.dumps(result.model_dump()))


def _mark_inline_failure(snapshot_id: int, job_id: int, message: str) -> None:
    from app.datasets.service import mark_snapshot_failed
    from app.db import session_scope
    from app.jobs.service import fail as fail_job
    from app.models import DatasetSnapshot

    with session_scope(write=True) as db:
        fail_job(db, job_id, "cli", message)
        mark_snapshot_failed(db, db.get(DatasetSnapshot, snapshot_id), message)


@app.command()
def export(project: str, format: str = typer.Option("pairs", "--format", "-f", help="pairs | kto | rankings | sft | ratings | steps"),
           out: Path = typer.Option(None, "--out", help="Also copy the snapshot's files into this directory."),
           test_fraction: float = typer.Option(0.1, help="Share of prompts in the test split."),
           seed: int = typer.Option(0),
           conversational: bool | None = typer.Option(None, "--conversational/--standard", help="Message lists or "
               "plain strings; default: message lists when any prompt is a multi-message chat."),
           hf_datasets: bool = typer.Option(False, help="Also write a Hugging Face save_to_disk directory."),
           min_agreement: float = typer.Option(0.0, help="Only comparisons whose raters agree at least this much (0-1)."),
           min_votes: int = typer.Option(1, help="Only comparisons with at least this many judgments."),
           exclude_gold: bool = typer.Option(False, "--exclude-gold", help="Leave out gold items."),
           exclude_unsafe: bool = typer.Option(False, "--exclude-unsafe", help="Leave out items flagged unsafe."),
           include_ai: bool = typer.Option(False, "--include-ai", help="Include AI judgments."),
           date_from: datetime | None = typer.Option(None, "--from", formats=["%Y-%m-%d"], help="Judgments from this day "
                                                     "on (UTC)."),
           date_to: datetime | None = typer.Option(None, "--to", formats=["%Y-%m-%d"], help="Judgments up to this day, "
                                                   "inclusive (UTC)."),
           as_json: bool = typer.Option(False, "--json", help="The manifest summary as JSON instead of a table.")):  # fmt: skip
    """Build a dataset snapshot of PROJECT inline (with a progress bar) and print its summary (the same filters as
    the project page's export form)."""
    import shutil
    from datetime import timedelta

    from app.datasets.service import build_snapshot, request_snapshot, snapshot_dir
    from app.db import session_scope
    from app.errors import RankforgeError
    from app.jobs.service import finish
    from app.models import Job, utcnow
    from app.projects.service import get_project

    filters = {"min_agreement": min_agreement, "min_votes": min_votes, "exclude_gold": exclude_gold,
               "exclude_unsafe": exclude_unsafe,
               "sources": ["human", "imported", "ai"] if include_ai else ["human", "imported"],
               "date_from": date_from.date().isoformat() if date_from else None,
               "date_to": (date_to.date() + timedelta(days=1)).isoformat() if date_to else None}  # fmt: skip
    params = {"format": format, "split": {"test_fraction": test_fraction, "seed": seed}, "filters": filters,
              "conversational": conversational, "hf_datasets": hf_datasets}  # fmt: skip
    snapshot_id = job_id = None
    try:
        with session_scope(write=True) as db:
            snapshot = request_snapshot(db, get_project(db, project), params, None)
            job = db.get(Job, snapshot.job_id)
            # Run inline: the job is marked running by this process, so no worker picks it up.
            job.status, job.worker_id, job.attempts, job.heartbeat_at = "running", "cli", 1, utcnow()
            snapshot_id, job_id = snapshot.id, job.id
        with session_scope() as db, typer.progressbar(length=100, label="exporting") as bar:
            from app.models import DatasetSnapshot

            snapshot = db.get(DatasetSnapshot, snapshot_id)
            state = {"done": 0}

            def progress(fraction: float, _message: str) -> None:
                step = int(fraction * 100) - state["done"]
                if step > 0:
                    bar.update(step)
                    state["done"] += step

            result = build_snapshot(db, snapshot, progress=progress)
            finish(db, job_id, "cli", result)
            bar.update(100 - state["done"])
            directory = snapshot_dir(snapshot)
    except RankforgeError as error:
        message = str(error.detail)
        if job_id is not None:
            _mark_inline_failure(snapshot_id, job_id, message)
        fail(message)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for item in directory.iterdir():
            target = out / item.name
            if item.is_dir():
                shutil.copytree(item, target, dirs_exist_ok=True)
            else:
                shutil.copy2(item, target)
    summary = result | {"path": str(directory), "copied_to": str(out) if out else None}
    if as_json:
        typer.echo(json.dumps(summary))
        return
    from app.cli_commands import table

    rows = summary.get("rows") or {}
    typer.echo(table([{"dataset": f"#{snapshot_id}", "format": format, "train": rows.get("train"),
                       "test": rows.get("test"), "sha256": (summary.get("sha256") or "")[:12],
                       "path": str(out or directory)}],
                     ["dataset", "format", "train", "test", "sha256", "path"]))  # fmt: skip


@app.command()
def demo(host: str = typer.Option(None, help="Default: RANKFORGE_HOST (127.0.0.1)."),
         port: int = typer.Option(None, help="Default: RANKFORGE_PORT (8000)."),
         worker: bool = typer.Option(True, help="Start a worker beside the web app."),
         empty: bool = typer.Option(False, "--empty", help="No simulated history: projects, users and models "
                                    "only, nothing rated yet.")):  # fmt: skip
    """Set up the embedded default (SQLite, local artifacts, demo data and users) and serve it.

    The first start also simulates a week of rating on the demo projects (raters sim-*, labelled as demo data)
    and trains a tiny reward model on it, unless --empty."""
    from app.config import get_settings
    from app.demo.setup import run_demo

    settings = get_settings()
    run_demo(host=host or settings.host, port=port or settings.port, with_worker=worker, empty=empty)


@app.command()
def worker(once: bool = typer.Option(False, "--once", help="Run at most one job, then exit."),
           poll: float = typer.Option(1.0, help="Seconds between polls of an empty queue.")):  # fmt: skip
    """Claim and run queued jobs (exports, training, generation)."""
    import logging

    from app.worker import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run_worker(once=once, poll_seconds=poll)



# --- training and the model registry -------------------------------------------------------------------------
models_app = typer.Typer(help="The model registry: policy and reward model versions.", no_args_is_help=True)
app.add_typer(models_app, name="models")


def _train_epilog(kind: str | None = None) -> str:
    """`rankforge train KIND --help`: that kind's hyperparameters with their defaults and docs (trainer.params,
    torch-free); without a kind, the kinds and how to ask for one's parameters."""
    from app.training.kinds import APP_PARAMS, KEY_PARAMS
    from trainer.params import DEFAULTS, FIELD_DOCS

    if kind not in DEFAULTS:
        return ("Each kind has its own hyperparameters: `rankforge train KIND --help` lists them (kinds: "
                + ", ".join(TRAINING_KINDS) + ").")
    lines = [f"{kind} hyperparameters (--param NAME=VALUE; VALUE is JSON, else a string; * the key ones):"]
    for name, value in DEFAULTS[kind].items():
        key = "*" if name in KEY_PARAMS[kind] else " "
        doc = FIELD_DOCS[kind].get(name, "")
        lines.append(f"{key} {name}={json.dumps(value)}" + (f"  {doc}" if doc else ""))
    lines.append("Job options (--param too): " + "; ".join(f"{k}: {v}" for k, v in APP_PARAMS.items()))
    return "\n\n".join(lines)


def _parse_param(text: str) -> tuple[str, object]:
    name, sep, raw = text.partition("=")
    if not sep or not name:
        fail(f"--param wants NAME=VALUE, got {text!r}.")
    try:
        return name.strip(), json.loads(raw)
    except json.JSONDecodeError:
        return name.strip(), raw


@app.command(epilog=_train_epilog())  # main() swaps in one kind's epilog for `train KIND --help`
def train(kind: str = typer.Argument(..., help=" | ".join(TRAINING_KINDS)),
          project: str = typer.Option(..., "--project", "-p", help="Project slug or id."),
          base_model: str = typer.Option(None, help="Policy version id or name (default: the project's newest policy, "
                                                    "else the newest one)."),
          reward_model: str = typer.Option(None, help="Reward version id or name (default: the newest; ppo, grpo, "
                                                      "rloo, score)."),
          dataset: int = typer.Option(None, help="Dataset snapshot id (default: a fresh snapshot of the project)."),
          param: list[str] = typer.Option([], "--param", help="Hyperparameter NAME=VALUE (repeatable; defaults "
                                                               "below)."),
          wait: bool = typer.Option(False, "--wait", help="Wait for the job with a progress bar (a worker must run)."),
          judge: str = typer.Option(None, "--judge", help="judge: the judge (id or name) whose verdicts to write; "
                                                          "--param scope=open|judged|all"),
          as_json: bool = typer.Option(False, "--json", help="With --wait: also print the finished job as JSON.")):  # fmt: skip
    """Queue a training job (a worker runs it) and print it as JSON; with --wait, follow it and end with one line
    saying what it made (e.g. "registered demo-reward-3, eval accuracy 0.667")."""
    import time

    from app.db import session_scope
    from app.errors import RankforgeError
    from app.jobs.service import get_job, job_json
    from app.models import JobKind
    from app.projects.service import get_project
    from app.training.service import create_training_job

    params = dict(_parse_param(p) for p in param)
    try:
        with session_scope(write=True) as db:
            if kind == JobKind.judge:  # the judge is named apart (--judge): it fixes model and method
                from app.judges.service import create_judge_job

                job = create_judge_job(db, get_project(db, project), judge=judge, params=params, actor=None)
            else:
                job = create_training_job(db, get_project(db, project), kind, dataset_id=dataset,
                                          base_model=base_model, reward_model=reward_model, params=params, actor=None)  # fmt: skip
            job_id = job.id
    except RankforgeError as error:
        fail(str(error.detail))
    if not wait:
        with session_scope() as db:
            typer.echo(json.dumps(job_json(get_job(db, job_id))))
        return
    shown = 0
    with typer.progressbar(length=1000, label=f"{kind} job {job_id}") as bar:
        while True:
            with session_scope() as db:
                state = job_json(get_job(db, job_id))
            step = int(state["progress"] * 1000) - shown
            if step > 0:
                bar.update(step)
                shown += step
            if state["status"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(1.0)
    if as_json:
        typer.echo(json.dumps(state))
    if state["status"] != "succeeded":
        fail(f"Job {job_id} {state['status']}: {state['error'] or state['message']}")
    typer.echo(job_summary(state))


def job_summary(state: dict) -> str:
    """One line on what a finished job made: the model version it registered with its held-out figures, the
    completions or dataset it wrote, what it scored."""
    from app.db import session_scope
    from app.models import ModelVersion

    result = state.get("result") or {}
    head = f"{state['kind']} job {state['id']} {state['status']}"
    if result.get("model_version_id"):
        with session_scope() as db:
            version = db.get(ModelVersion, result["model_version_id"])
            name, metrics = (version.name, dict(version.metrics or {})) if version else ("?", {})
        held_out = {k[len("eval/"):]: v for k, v in metrics.items()
                    if k.startswith("eval/") and isinstance(v, (int, float)) and not isinstance(v, bool)}  # fmt: skip
        if "accuracy" in held_out:  # the reward model's figure first
            held_out = {"accuracy": held_out.pop("accuracy"), **held_out}
        figures = ", ".join(f"eval {k.replace('_', ' ')} {v:.3f}".rstrip("0").rstrip(".") if isinstance(v, float)
                            else f"eval {k.replace('_', ' ')} {v}" for k, v in list(held_out.items())[:2])  # fmt: skip
        return f"{head}: registered {name}" + (f", {figures}" if figures else " (no held-out figures)")
    if result.get("comparison_ids") is not None:
        return (f"{head}: {len(result.get('completion_ids') or [])} completions in "
                f"{len(result['comparison_ids'])} new comparisons")  # fmt: skip
    if result.get("dataset_id"):
        return f"{head}: dataset #{result['dataset_id']}"
    if result.get("scored_comparisons") is not None:
        return f"{head}: {result['scored_comparisons']} comparisons scored"
    return head + (f": {state['message']}" if state.get("message") and state["message"] != state["status"] else "")


@models_app.command("list")
def models_list(kind: str = typer.Option(None, help="policy | reward | prm"),
                as_json: bool = typer.Option(False, "--json", help="One JSON object a line.")):  # fmt: skip
    """List model versions, newest first."""
    from app.db import session_scope
    from app.registry.service import list_versions, version_json

    with session_scope() as db:
        versions = [version_json(v) for v in list_versions(db, kind=kind)]
    if as_json:
        for v in versions:
            typer.echo(json.dumps(v))
        return
    from app.cli_commands import table

    rows = [v | {"made by": f"job {v['job_id']} on dataset {v['dataset_id']}" if v["job_id"] else "registered",
                 "held-out": ", ".join(f"{k[5:]} {x:.3f}" for k, x in (v.get("metrics") or {}).items()
                                       if k.startswith("eval/") and isinstance(x, float))}
            for v in versions]  # fmt: skip
    typer.echo(table(rows, ["id", "kind", "name", "made by", "held-out", "path"]) if rows else "No model versions.")


@models_app.command("add")
def models_add(name: str, path: Path, kind: str = typer.Option(..., "--kind", help="policy | reward | prm"),
               project: str = typer.Option(None, "--project", "-p", help="Project slug or id it belongs to.")):  # fmt: skip
    """Register a local Hugging Face checkpoint directory as a model version."""
    from app.db import session_scope
    from app.errors import RankforgeError
    from app.projects.service import get_project
    from app.registry.service import register_version, version_json

    try:
        with session_scope(write=True) as db:
            owner = get_project(db, project) if project else None
            typer.echo(json.dumps(version_json(register_version(db, name, path, kind, project=owner))))
    except RankforgeError as error:
        fail(str(error.detail))


@models_app.command("init-tiny")
def models_init_tiny(project: str = typer.Option(None, "--project", "-p", help="Train the tokenizer on this "
                                                                               "project's texts."),
                     seed: int = typer.Option(0)):  # fmt: skip
    """Build a tiny Llama-style policy and reward model (BPE tokenizer trained here, chat template) and register
    both: `python -m trainer.tiny` runs in a child process."""
    from app.db import session_scope
    from app.errors import RankforgeError
    from app.projects.service import get_project
    from app.registry.service import init_tiny, version_json

    try:
        with session_scope() as db:
            owner = get_project(db, project) if project else None
            for version in init_tiny(db, owner, seed=seed):
                typer.echo(json.dumps(version_json(version)))
    except RankforgeError as error:
        fail(str(error.detail))


from app.cli_commands import register as register_engineer_commands  # noqa: E402 (project, dataset, job)

register_engineer_commands(app)

from app.cli_endpoints import register as register_endpoint_commands  # noqa: E402 (models endpoint, models serve)

register_endpoint_commands(models_app, fail)


def main():
    command = typer.main.get_command(app)
    args = sys.argv[1:]
    if len(args) >= 2 and args[0] == "train" and args[1] in TRAINING_KINDS and {"--help", "-h"} & set(args):
        command.commands["train"].epilog = _train_epilog(args[1])  # that kind's parameters only
    command()


if __name__ == "__main__":
    main()
