"""`rankforge demo`: the embedded default, ready to click through.

SQLite file and artifact directory under ./var, demo users, two demo projects (pairwise and rank)
from demo_prompts.jsonl, then the web app (and a worker beside it, when the worker exists).
"""

from __future__ import annotations

import signal

from sqlalchemy import select

from app.demo import DATA_FILE

DEMO_USERS = [
    ("admin", "admin", "admin-demo-pass"),
    ("ann1", "annotator", "ann1-demo-pass"),
    ("ann2", "annotator", "ann2-demo-pass"),
    ("eng", "engineer", "eng-demo-pass"),
]
GUIDELINES = """# How to rank

Pick the response you would rather receive.

1. **Helpful**: does it answer what was asked, correctly and completely?
2. **Harmless**: does it avoid dangerous or hateful content? A polite refusal of a harmful request is good.
3. **Honest**: no made-up facts; says so when unsure.

Prefer short and correct over long and padded. Use *both bad* when neither is acceptable.

Keys: `1` A is better, `2` B is better, `T` tie, `X` both bad, `S` skip, `?` all keys.
"""


def seed_demo(database_url: str | None = None) -> dict:
    """Idempotent: users, projects and data are created once."""
    from app.db import session_scope
    from app.imports.parsers import parse_import
    from app.imports.service import import_records
    from app.models import Project, User
    from app.projects.schemas import AttributeScale, ProjectCreate
    from app.projects.service import create_project
    from app.users.service import create_user

    records = parse_import(DATA_FILE.read_bytes(), "native")
    with session_scope(database_url, write=True) as db:
        for username, role, password in DEMO_USERS:
            if db.scalar(select(User).where(User.username == username)) is None:
                create_user(db, username, role, password, actor=None)
        projects = {}
        for slug, name, mode, keep in (
            ("demo", "Demo: which answer is better?", "pairwise", lambda r: len(r.completions) == 2),
            ("demo-rank", "Demo: rank the answers", "rank", lambda r: len(r.completions) > 2),
        ):
            project = db.scalar(select(Project).where(Project.slug == slug))
            if project is None:
                project = create_project(db, ProjectCreate(
                    name=name, slug=slug, guidelines=GUIDELINES, mode=mode, overlap=2, max_overlap=3,
                    allow_ties=True,
                    attributes=[AttributeScale(name="helpful"), AttributeScale(name="harmless")] if mode == "rank" else [],
                ), actor=None)  # fmt: skip
            import_records(db, project, [r for r in records if keep(r)])
            projects[slug] = project.id
    return projects


def ensure_tiny_models(database_url: str | None = None) -> None:
    """Build and register the tiny policy and reward model once, when the trainer's dependencies are installed."""
    from importlib.util import find_spec

    from app.db import session_scope
    from app.models import ModelVersion, Project

    if find_spec("torch") is None or find_spec("transformers") is None:
        return
    with session_scope(database_url, write=True) as db:
        if db.scalar(select(ModelVersion.id).limit(1)) is not None:
            return
        from app.errors import JobFailed
        from app.registry.service import init_tiny

        print("Building tiny demo models (a few seconds, once)...", flush=True)
        try:
            init_tiny(db, db.scalar(select(Project).where(Project.slug == "demo")))
        except JobFailed as error:
            print(f"Tiny demo models not built: {error.detail}", flush=True)


def run_demo(host: str, port: int, with_worker: bool, empty: bool = False) -> None:
    from app.config import get_settings
    from app.migrate import upgrade
    from app.serving import run_server

    settings = get_settings()
    listener = bind_port(host, port)  # first: a busy port fails in a second, not after the demo is built
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade()
    seed_demo()
    ensure_tiny_models()
    if not empty:
        from app.demo.history import build_history

        build_history(log=lambda line: print(line, flush=True))
    # uvicorn handles SIGTERM and SIGINT itself, shuts down, then raises the signal again with the handler it found:
    # Python's default for SIGTERM ends the process on the spot, skipping the `finally` that stops the worker.
    # With this handler that second SIGTERM unwinds like Ctrl+C, so the worker is stopped either way.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    worker = _start_worker() if with_worker else None
    url = f"http://{host}:{port}"
    lines = [
        "",
        f"Rankforge demo is running: open {url}/login",
        f"  database: {settings.database_url}    artifacts: {settings.data_dir}",
        "  logins (username / password):",
        *[f"    {role:<10} {username} / {password}" for username, role, password in DEMO_USERS],
        f"  API docs: {url}/docs    Stop with Ctrl+C.",
        "",
    ]
    print("\n".join(lines), flush=True)
    try:
        run_server(host, port, sockets=[listener])
    finally:
        if worker is not None:
            _stop_worker(worker)


def bind_port(host: str, port: int):
    """A listening socket on host:port for the web app, bound before the demo says it runs; a busy port ends the
    command with how to choose another."""
    import errno
    import socket
    import sys

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        busy = error.errno == errno.EADDRINUSE
        reason = "is already in use (another Rankforge demo or another program)" if busy else f"cannot be used: {error}"
        print(f"Port {port} on {host} {reason}.\nPick another: rankforge demo --port {port + 1}   "
              f"(or RANKFORGE_PORT={port + 1} ./dev.sh demo)", file=sys.stderr, flush=True)  # fmt: skip
        raise SystemExit(1) from None
    listener.listen(128)
    listener.set_inheritable(True)
    return listener


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def _stop_worker(worker, grace_seconds: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within the grace period (it ends its job's child first)."""
    import subprocess

    if worker.poll() is not None:
        return
    worker.terminate()
    try:
        worker.wait(grace_seconds)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def _start_worker():
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "app.cli", "worker"])



