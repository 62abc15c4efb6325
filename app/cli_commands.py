"""`rankforge project|dataset|job ...`: what engineers script, as tables for people and `--json` for scripts.

Registered on the main `rankforge` command by `register(app)` (app/cli.py). Like the rest of the CLI these work
on the database and artifact store directly (run them where the server runs); from elsewhere use the Python
client (`from rankforge import Rankforge`).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import typer

project_app = typer.Typer(help="Projects: create, list, show, update.", no_args_is_help=True)
dataset_app = typer.Typer(help="Dataset snapshots: list, show, download.", no_args_is_help=True)
job_app = typer.Typer(help="Jobs: list, show, cancel, wait.", no_args_is_help=True)
round_app = typer.Typer(help="Rounds of the loop: start, list, recipe.", no_args_is_help=True)

JSON_OPTION = typer.Option(False, "--json", help="Machine-readable JSON instead of a table.")


def register(app: typer.Typer) -> None:
    app.add_typer(project_app, name="project")
    app.add_typer(dataset_app, name="dataset")
    app.add_typer(job_app, name="job")
    app.add_typer(round_app, name="round")


def fail(message: str, code: int = 1):
    """Print the message in red on stderr and exit with the code (every `rankforge` command fails this way)."""
    typer.secho(message, err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def _emit_json(value) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


def table(rows: list[dict], columns: list[str]) -> str:
    """A plain fixed-width table (no colours: it pipes and pastes cleanly)."""
    cells = [[("" if row.get(c) is None else str(row.get(c))).replace("\n", " ") for c in columns] for row in rows]
    widths = [min(60, max([len(c)] + [len(r[i]) for r in cells])) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v[:w].ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _run(work):
    """Run `work(db)` in a write unit of work; RankforgeError and bad input end the command with the message."""
    from pydantic import ValidationError

    from app.db import session_scope
    from app.errors import RankforgeError

    try:
        with session_scope(write=True) as db:
            return work(db)
    except RankforgeError as error:
        fail(str(error.detail))
    except ValidationError as error:
        fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()), code=2)


# --- projects --------------------------------------------------------------------------------------------------


def parse_scale(text: str) -> dict:
    """`helpful`, `helpful:1:7` or `helpful:1:5:Helpfulness` -> an attribute scale."""
    parts = text.split(":")
    scale: dict = {"name": parts[0]}
    try:
        if len(parts) >= 3:
            scale["min"], scale["max"] = int(parts[1]), int(parts[2])
    except ValueError:
        fail(f"--attribute wants NAME[:MIN:MAX[:LABEL]], got {text!r}.", code=2)
    if len(parts) >= 4:
        scale["label"] = ":".join(parts[3:])
    return scale


def project_json(db, project) -> dict:
    from sqlalchemy import func, select

    from app.models import Comparison, Judgment, ProjectMember, User
    from app.projects.schemas import ProjectOut
    from app.projects.service import current_guidelines

    body = ProjectOut.model_validate(project).model_dump(mode="json")
    body["members"] = list(db.scalars(select(User.username).join(ProjectMember, ProjectMember.user_id == User.id)
                                      .where(ProjectMember.project_id == project.id).order_by(User.username)))  # fmt: skip
    body["comparisons"] = db.scalar(select(func.count()).select_from(Comparison)
                                    .where(Comparison.project_id == project.id))  # fmt: skip
    body["judgments"] = db.scalar(select(func.count()).select_from(Judgment).where(Judgment.project_id == project.id))
    guidelines = current_guidelines(db, project)
    body["guidelines"] = guidelines.body if guidelines else ""
    return body


def _member_ids(db, usernames: list[str]) -> list[int]:
    from sqlalchemy import select

    from app.errors import NotFound
    from app.models import User

    found = dict(db.execute(select(User.username, User.id).where(User.username.in_(usernames))).all())
    missing = sorted(set(usernames) - set(found))
    if missing:
        raise NotFound(f"No users {', '.join(missing)}.")
    return [found[name] for name in usernames]


def _show_project(body: dict, as_json: bool) -> None:
    if as_json:
        _emit_json(body)
        return
    scales = ", ".join(f"{a['name']} {a['min']}-{a['max']}" for a in body["attributes"]) or "none"
    for label, value in (("project", f"{body['slug']} (id {body['id']})"), ("name", body["name"]),
                         ("mode", body["mode"]), ("overlap", f"{body['overlap']} (adaptive up to {body['max_overlap']})"),
                         ("allow ties", body["allow_ties"]), ("attributes", scales), ("gold rate", body["gold_rate"]),
                         ("status", body["status"]), ("guidelines", f"version {body['guideline_version']}, "
                                                                   f"{len(body['guidelines'])} characters"),
                         ("members", (", ".join(body["members"]) or "none")
                          + (" (members only)" if body["members_only"] else " (open to every annotator)")),
                         ("comparisons", body["comparisons"]), ("judgments", body["judgments"])):  # fmt: skip
        typer.echo(f"{label:<12} {value}")


@project_app.command("create")
def project_create(
    name: str,
    slug: str = typer.Option(None, help="Default: made from the name."),
    mode: str = typer.Option("pairwise", help="pairwise | rank"),
    overlap: int = typer.Option(1, help="Judgments wanted per comparison."),
    max_overlap: int = typer.Option(None, help="Adaptive ceiling when raters disagree."),
    allow_ties: bool = typer.Option(True, "--allow-ties/--no-ties"),
    guidelines_file: Path = typer.Option(None, "--guidelines-file", help="Markdown file with the guidelines."),
    attribute: list[str] = typer.Option([], "--attribute", help="Scale NAME[:MIN:MAX[:LABEL]] (repeatable)."),
    gold_rate: float = typer.Option(0.0),
    member: list[str] = typer.Option([], "--member", help="Username of a member (repeatable)."),
    members_only: bool = typer.Option(False, help="Only members may rate."),
    description: str = typer.Option(""),
    as_json: bool = JSON_OPTION,
):
    """Create a project."""
    from app.projects.schemas import ProjectCreate
    from app.projects.service import create_project, set_members

    guidelines = _read_text(guidelines_file) if guidelines_file else ""

    def work(db):
        data = ProjectCreate(name=name, slug=slug, mode=mode, overlap=overlap, max_overlap=max_overlap,
                             allow_ties=allow_ties, guidelines=guidelines, attributes=[parse_scale(a) for a in attribute],
                             gold_rate=gold_rate, members_only=members_only, description=description)  # fmt: skip
        project = create_project(db, data, None)
        if member:
            set_members(db, project, _member_ids(db, member), None)
        db.flush()
        return project_json(db, project)

    _show_project(_run(work), as_json)


def _read_text(path: Path) -> str:
    if not path.is_file():
        fail(f"No file {path}.")
    return path.read_text(encoding="utf-8")


@project_app.command("list")
def project_list(as_json: bool = JSON_OPTION):
    """Every project."""
    from sqlalchemy import select

    from app.models import Project
    from app.projects.schemas import ProjectOut

    def work(db):
        return [ProjectOut.model_validate(p).model_dump(mode="json") for p in db.scalars(select(Project).order_by(Project.id))]

    projects = _run(work)
    if as_json:
        _emit_json(projects)
    else:
        typer.echo(table(projects, ["id", "slug", "name", "mode", "overlap", "status"]))


@project_app.command("show")
def project_show(project: str, as_json: bool = JSON_OPTION):
    """One project's settings, members and counts (PROJECT: slug or id)."""
    from app.projects.service import get_project

    _show_project(_run(lambda db: project_json(db, get_project(db, project))), as_json)


@project_app.command("update")
def project_update(
    project: str,
    name: str = typer.Option(None),
    overlap: int = typer.Option(None),
    max_overlap: int = typer.Option(None),
    allow_ties: bool = typer.Option(None, "--allow-ties/--no-ties"),
    guidelines_file: Path = typer.Option(None, "--guidelines-file", help="New guidelines (a new version)."),
    attribute: list[str] = typer.Option([], "--attribute", help="Replace the scales: NAME[:MIN:MAX[:LABEL]] "
                                                                 "(repeatable; only before the first judgment)."),
    gold_rate: float = typer.Option(None),
    status: str = typer.Option(None, help="active | paused | archived"),
    member: list[str] = typer.Option([], "--member", help="Replace the members (repeatable usernames)."),
    members_only: bool = typer.Option(None, "--members-only/--open"),
    description: str = typer.Option(None),
    as_json: bool = JSON_OPTION,
):
    """Change a project's settings."""
    from sqlalchemy import exists, select

    from app.errors import Conflict
    from app.models import Judgment
    from app.projects.schemas import AttributeScale, ProjectUpdate
    from app.projects.service import get_project, set_members, update_project

    guidelines = _read_text(guidelines_file) if guidelines_file else None

    def work(db):
        row = get_project(db, project)
        changes = {"name": name, "overlap": overlap, "max_overlap": max_overlap, "allow_ties": allow_ties,
                   "guidelines": guidelines, "gold_rate": gold_rate, "status": status, "members_only": members_only,
                   "description": description}  # fmt: skip
        update_project(db, row, ProjectUpdate(**{k: v for k, v in changes.items() if v is not None}), None)
        if attribute:
            if db.scalar(select(exists().where(Judgment.project_id == row.id))):
                raise Conflict("This project has judgments: its attribute scales can no longer change.")
            scales = [AttributeScale(**parse_scale(a)) for a in attribute]
            row.attributes = [s.model_dump() | {"label": s.label or s.name.replace("_", " ").title()} for s in scales]
        if member:
            set_members(db, row, _member_ids(db, member), None)
        db.flush()
        return project_json(db, row)

    _show_project(_run(work), as_json)


# --- datasets --------------------------------------------------------------------------------------------------


@dataset_app.command("list")
def dataset_list(project: str = typer.Option(None, "--project", "-p", help="Slug or id."),
                 limit: int = typer.Option(50), as_json: bool = JSON_OPTION):  # fmt: skip
    """Snapshots, newest first."""
    from app.api import newest_first
    from app.datasets.service import snapshot_json
    from app.models import DatasetSnapshot
    from app.projects.service import get_project

    def work(db):
        query = newest_first(DatasetSnapshot, get_project(db, project).id if project else None).limit(limit)
        return [snapshot_json(s) for s in db.scalars(query)]

    rows = _run(work)
    if as_json:
        _emit_json(rows)
        return
    for row in rows:
        row["train/test"] = f"{row['rows']['train']}/{row['rows']['test']}"
        row["sha256"] = (row["sha256"] or "")[:12]
        row["created"] = row["created_at"][:19]
    typer.echo(table(rows, ["id", "project_id", "format", "status", "train/test", "sha256", "created"]))


@dataset_app.command("show")
def dataset_show(dataset_id: int, as_json: bool = JSON_OPTION):
    """One snapshot: status, rows, files, spec."""
    from app.datasets.service import get_snapshot, snapshot_json

    body = _run(lambda db: snapshot_json(get_snapshot(db, dataset_id)))
    if as_json:
        _emit_json(body)
        return
    for key in ("id", "project_id", "format", "status", "rows", "sha256", "size_bytes", "files", "job_id", "error",
                "created_at"):  # fmt: skip
        typer.echo(f"{key:<12} {json.dumps(body[key]) if isinstance(body[key], dict | list) else body[key]}")
    typer.echo(f"{'spec':<12} {json.dumps(body['spec'])}")


@dataset_app.command("download")
def dataset_download(dataset_id: int, out: Path = typer.Option(..., "--out", "-o", help="Target directory."),
                     as_json: bool = JSON_OPTION):  # fmt: skip
    """Copy a ready snapshot's files (after checking them against its manifest) into OUT."""
    from app.datasets.service import get_snapshot, snapshot_dir
    from app.datasets.snapshot_files import verify_snapshot
    from app.errors import Conflict

    def work(db):
        snapshot = get_snapshot(db, dataset_id)
        if snapshot.status != "ready":
            raise Conflict(f"Dataset {dataset_id} is {snapshot.status}.")
        directory = snapshot_dir(snapshot)
        try:
            verify_snapshot(directory)
        except Exception as error:  # noqa: BLE001 - tampered or missing: say so, copy nothing
            raise Conflict(f"Dataset {dataset_id} failed its integrity check: {error}") from error
        return directory

    directory = _run(work)
    out.mkdir(parents=True, exist_ok=True)
    copied = []
    for item in sorted(directory.iterdir()):
        if item.name.startswith("."):
            continue
        target = out / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target)
        copied.append(item.name)
    if as_json:
        _emit_json({"dataset_id": dataset_id, "out": str(out), "files": copied})
    else:
        typer.echo(f"Copied {len(copied)} files of dataset {dataset_id} to {out}: {', '.join(copied)}")


# --- jobs ------------------------------------------------------------------------------------------------------


def _job_rows(rows: list[dict]) -> list[dict]:
    for row in rows:
        row["progress"] = f"{row['progress'] * 100:.0f}%"
        row["created"] = row["created_at"][:19]
        row["message"] = (row["error"] or row["message"] or "")[:50]
    return rows


@job_app.command("list")
def job_list(project: str = typer.Option(None, "--project", "-p"), status: str = typer.Option(None),
             kind: str = typer.Option(None), limit: int = typer.Option(50), as_json: bool = JSON_OPTION):  # fmt: skip
    """Jobs, newest first."""
    from sqlalchemy import select

    from app.api import newest_first
    from app.jobs.service import job_json
    from app.models import Job, Project
    from app.projects.service import get_project

    def work(db):
        query = newest_first(Job, get_project(db, project).id if project else None).limit(limit)
        if status:
            query = query.where(Job.status == status)
        if kind:
            query = query.where(Job.kind == kind)
        jobs = [job_json(job) for job in db.scalars(query)]
        slugs = dict(db.execute(select(Project.id, Project.slug)
                                .where(Project.id.in_({j["project_id"] for j in jobs}))).all())  # fmt: skip
        return [j | {"project": slugs.get(j["project_id"])} for j in jobs]

    rows = _run(work)
    if as_json:
        _emit_json(rows)
    else:
        typer.echo(table(_job_rows(rows), ["id", "kind", "project", "status", "progress", "created", "message"]))


def _job(job_id: int) -> dict:
    from app.jobs.service import get_job, job_json

    return _run(lambda db: job_json(get_job(db, job_id)))


@job_app.command("show")
def job_show(job_id: int, as_json: bool = JSON_OPTION):
    """One job: status, progress, result, error."""
    body = _job(job_id)
    if as_json:
        _emit_json(body)
        return
    for key in ("id", "kind", "project_id", "status", "progress", "message", "error", "dataset_id", "base_model_id",
                "attempts", "created_at", "started_at", "finished_at"):  # fmt: skip
        if body.get(key) is not None:
            typer.echo(f"{key:<14} {body[key]}")
    typer.echo(f"{'result':<14} {json.dumps(body['result'])}")


@job_app.command("cancel")
def job_cancel(job_id: int, as_json: bool = JSON_OPTION):
    """Cancel a queued job, or ask a running one to stop."""
    from app.jobs.service import get_job, job_json, request_cancel

    body = _run(lambda db: job_json(request_cancel(db, get_job(db, job_id))))
    if as_json:
        _emit_json(body)
    else:
        typer.echo(f"Job {job_id}: {body['status']} ({body['message']}).")


@job_app.command("wait")
def job_wait(job_id: int, timeout: float = typer.Option(None, help="Give up after this many seconds (exit 2)."),
             poll: float = typer.Option(1.0), as_json: bool = JSON_OPTION):  # fmt: skip
    """Wait for a job to end (a progress bar; a worker must run). Exit 0 when it succeeded, 1 otherwise."""
    deadline = None if timeout is None else time.monotonic() + timeout
    state = _job(job_id)
    shown = 0
    # The bar goes to stderr, so `--json` output on stdout stays clean.
    with typer.progressbar(length=1000, label=f"{state['kind']} job {job_id}", file=sys.stderr) as bar:
        while state["status"] not in ("succeeded", "failed", "cancelled"):
            if deadline is not None and time.monotonic() > deadline:
                fail(f"Job {job_id} is still {state['status']} after {timeout} s.", code=2)
            step = int(state["progress"] * 1000) - shown
            if step > 0:
                bar.update(step)
                shown += step
            time.sleep(poll)
            state = _job(job_id)
        bar.update(1000 - shown)
    if as_json:
        _emit_json(state)
    else:
        typer.echo(f"Job {job_id} {state['status']}" + (f": {state['error']}" if state["error"] else "."))
    if state["status"] != "succeeded":
        raise typer.Exit(1)


# --- rounds ------------------------------------------------------------------------------------------------------


def _round_row(body: dict) -> dict:
    metrics = body["metrics"]
    ci = metrics.get("win_rate_ci")
    return {"number": body["number"], "status": body["status"], "policy": body["policy_version_id"],
            "new_policy": body["new_policy_version_id"],
            "win_rate": f"{metrics['win_rate']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if metrics.get("win_rate") is not None else None,
            "battles": metrics.get("battles"), "judgments": metrics.get("judgments"),
            "jobs": ",".join(map(str, body["job_ids"])), "error": body["error"]}  # fmt: skip


@round_app.command("start")
def round_start(project: str, as_json: bool = JSON_OPTION):
    """Start PROJECT's next round now (its generate job is queued; the worker does the rest)."""
    from app.projects.service import get_project
    from app.training.round_views import round_json
    from app.training.rounds import start_round

    body = _run(lambda db: round_json(db, start_round(db, get_project(db, project))))
    if as_json:
        _emit_json(body)
    else:
        typer.echo(f"Round {body['number']} of {project} started: {body['status']} (jobs {', '.join(map(str, body['job_ids']))}).")


@round_app.command("list")
def round_list(project: str, as_json: bool = JSON_OPTION):
    """PROJECT's rounds with their status and win rate over the previous policy."""
    from app.projects.service import get_project
    from app.training.round_views import round_json
    from app.training.rounds import list_rounds

    rows = _run(lambda db: [round_json(db, r) for r in list_rounds(db, get_project(db, project))])
    if as_json:
        _emit_json({"rounds": rows})
    else:
        typer.echo(table([_round_row(r) for r in rows], ["number", "status", "policy", "new_policy", "win_rate",
                                                          "battles", "judgments", "jobs", "error"]))  # fmt: skip


@round_app.command("recipe")
def round_recipe(project: str, set_values: list[str] = typer.Option(None, "--set", help="KEY=VALUE (VALUE is JSON "
                 "when it parses, else text); repeatable."), as_json: bool = JSON_OPTION):  # fmt: skip
    """Show PROJECT's round recipe, or change some of its settings with --set."""
    from app.projects.service import get_project
    from app.training.round_recipe import get_recipe, set_recipe

    values = {}
    for item in set_values or []:
        key, sep, raw = item.partition("=")
        if not sep:
            fail(f"--set {item!r}: expected KEY=VALUE.", code=2)
        try:
            values[key.strip()] = json.loads(raw)
        except ValueError:
            values[key.strip()] = raw

    def work(db):
        found = get_project(db, project)
        return (set_recipe(db, found, values) if values else get_recipe(found)).model_dump(mode="json")

    body = _run(work)
    if as_json:
        _emit_json(body)
    else:
        for key, value in body.items():
            shown = f"{len(value)} prompts" if key == "eval_prompt_ids" else json.dumps(value)
            typer.echo(f"{key:24s} {shown}")
