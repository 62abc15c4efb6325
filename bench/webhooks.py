"""Does a slow webhook receiver slow the rating loop? And does every event arrive?

Creates a database (PostgreSQL by default, `--sqlite` for a file), seeds raters and comparisons, starts a real
uvicorn and runs `--raters` raters in a closed loop (next task, submit, as fast as they can) for `--duration`
seconds twice: without webhooks, then with a global endpoint for `judgment.created` whose receiver answers after
`--receiver-delay` seconds, sent by a separate process calling `app.webhooks.delivery.deliver_due` (what the worker
does when idle). Prints submit and next-task latency (p50/p99) for both phases, then waits for the sender to
drain and counts judgments delivered, lost (in the database, never received) and duplicated.

    .venv/bin/python bench/webhooks.py                       # the real figures: 50 raters, 30 s, 2 s receiver
    .venv/bin/python bench/webhooks.py --raters 5 --duration 3 --comparisons 400   # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

SENDER = """
import sys, time
from app.webhooks.delivery import deliver_due
while True:
    if deliver_due("bench-sender") == 0:
        time.sleep(0.2)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Receiver:
    """Answers every delivery after `delay` seconds; checks signatures; records the judgment ids received."""

    def __init__(self, delay: float):
        self.delay, self.secret = delay, None
        self.ids: list[int] = []
        self.messages = self.bad_signatures = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                time.sleep(receiver.delay)
                receiver.record(self.headers, body)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def record(self, headers, body: bytes) -> None:
        key = base64.b64decode(self.secret.removeprefix("whsec_"))
        signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
        expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        payload = json.loads(body)
        with self.lock:
            self.messages += 1
            self.bad_signatures += expected not in headers["webhook-signature"].split(" ")
            if payload["type"] == "judgment.created":
                self.ids += [j["id"] for j in payload["data"]["judgments"]]


def make_database(args) -> str:
    if args.sqlite:
        return f"sqlite:///{tempfile.mkdtemp(prefix='rf-bench-webhooks-')}/bench.db"
    name = f"rf_bench_webhooks_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return args.pg_url.rsplit("/", 1)[0] + "/" + name


def drop_database(args, url: str) -> None:
    if args.sqlite or args.keep_db:
        return
    from app.db import dispose_engines

    dispose_engines()
    admin = sa.create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    admin.dispose()


def seed(url: str, args) -> tuple[str, list[str], int]:
    """An admin token, one token per rater, and a project with `--comparisons` comparisons (overlap 1)."""
    from app.auth.service import create_api_token
    from app.db import session_scope
    from app.imports.service import import_file
    from app.migrate import upgrade
    from app.projects.schemas import ProjectCreate
    from app.projects.service import create_project
    from app.users.service import create_user

    upgrade(url)
    tokens = []
    with session_scope(url, write=True) as db:
        admin = create_user(db, "bench-admin", "admin", "bench-admin-pass", actor=None)
        admin_token = create_api_token(db, admin, "bench")
        for i in range(args.raters):
            tokens.append(create_api_token(db, create_user(db, f"rater{i}", "annotator", "rater-pass-1", actor=None),
                                           "bench"))  # fmt: skip
        project = create_project(db, ProjectCreate(name="Webhook bench", slug="bench", overlap=1), admin)
        lines = [json.dumps({"prompt": f"Question {i}?", "external_id": f"q{i}",
                             "completions": [{"text": f"answer a {i}", "model": "a"},
                                             {"text": f"answer b {i}", "model": "b"}]})
                 for i in range(args.comparisons)]  # fmt: skip
        import_file(db, project, ("\n".join(lines) + "\n").encode(), "native", admin)
        project_id = project.id
    return admin_token, tokens, project_id


async def rater(client: httpx.AsyncClient, token: str, project_id: int, until: float, stats: dict) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    while time.monotonic() < until:
        started = time.perf_counter()
        task = await client.get(f"/api/v1/projects/{project_id}/tasks/next", headers=headers)
        stats["next"].append(time.perf_counter() - started)
        if task.status_code == 204:
            stats["empty"] += 1
            return
        body = task.json()
        ids = [o["id"] for o in body["options"]]
        started = time.perf_counter()
        response = await client.post(f"/api/v1/assignments/{body['assignment_id']}/judgment",
                                     json={"ranking": [[ids[0]], [ids[1]]]}, headers=headers)  # fmt: skip
        stats["submit"].append(time.perf_counter() - started)
        stats["errors"] += response.status_code != 201


async def phase(base_url: str, tokens: list[str], project_id: int, duration: float) -> dict:
    stats = {"next": [], "submit": [], "errors": 0, "empty": 0}
    limits = httpx.Limits(max_connections=len(tokens) + 5)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:
        until = time.monotonic() + duration
        await asyncio.gather(*(rater(client, t, project_id, until, stats) for t in tokens))
    return stats


def report(name: str, stats: dict, duration: float) -> None:
    ms = {k: [v * 1000 for v in stats[k]] for k in ("next", "submit")}
    print(f"{name:<18} judgments {len(ms['submit']):>6} ({len(ms['submit']) / duration:6.1f}/s)  "
          f"submit p50 {percentile(ms['submit'], 0.5):6.1f} ms p99 {percentile(ms['submit'], 0.99):6.1f} ms  "
          f"next p50 {percentile(ms['next'], 0.5):6.1f} ms p99 {percentile(ms['next'], 0.99):6.1f} ms  "
          f"errors {stats['errors']}" + ("  (queue ran dry)" if stats["empty"] else ""))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raters", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--receiver-delay", type=float, default=2.0)
    parser.add_argument("--comparisons", type=int, default=20000, help="enough that the queue never runs dry")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--sqlite", action="store_true", help="a SQLite file instead of PostgreSQL")
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--pg-url", default=os.environ.get("RANKFORGE_BENCH_PG",
                                                           "postgresql+psycopg://postgres@127.0.0.1:5432/test"))  # fmt: skip
    args = parser.parse_args()

    url = make_database(args)
    data_dir = tempfile.mkdtemp(prefix="rf-bench-data-")
    env = os.environ | {"RANKFORGE_DATABASE_URL": url, "RANKFORGE_DATA_DIR": data_dir,
                        "RANKFORGE_WEBHOOKS_ALLOW_PRIVATE": "true"}  # fmt: skip
    os.environ.update(env)
    from app.config import get_settings

    get_settings.cache_clear()
    processes: list[subprocess.Popen] = []
    try:
        admin_token, tokens, project_id = seed(url, args)
        port = free_port()
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.asgi:app", "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(args.workers), "--log-level", "warning"], cwd=ROOT, env=env))  # fmt: skip
        base_url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(base_url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        print(f"{args.raters} raters, {args.duration:.0f} s a phase, receiver answers after {args.receiver_delay} s, "
              f"{'SQLite' if args.sqlite else 'PostgreSQL'}, {args.workers} web workers")  # fmt: skip

        without = asyncio.run(phase(base_url, tokens, project_id, args.duration))
        report("without webhooks", without, args.duration)

        receiver = Receiver(args.receiver_delay)
        created = httpx.post(base_url + "/api/v1/webhooks", headers={"Authorization": f"Bearer {admin_token}"},
                             json={"url": receiver.url, "events": ["judgment.created"]}).json()  # fmt: skip
        receiver.secret = created["secret"]
        processes.append(subprocess.Popen([sys.executable, "-c", SENDER], cwd=ROOT, env=env))
        from app.db import session_scope
        from app.models import Judgment, WebhookDelivery

        with session_scope(url) as db:
            before = db.scalar(sa.select(sa.func.max(Judgment.id))) or 0
        with_hooks = asyncio.run(phase(base_url, tokens, project_id, args.duration))
        report("with webhooks", with_hooks, args.duration)

        with session_scope(url) as db:  # every judgment of the second phase must arrive
            expected = set(db.scalars(sa.select(Judgment.id).where(Judgment.id > before)))
        deadline = time.monotonic() + args.drain_timeout
        while time.monotonic() < deadline and not expected <= set(receiver.ids):
            time.sleep(0.5)
        drained_after = args.drain_timeout - (deadline - time.monotonic())
        received = set(receiver.ids)
        with session_scope(url) as db:
            statuses = dict(db.execute(sa.select(WebhookDelivery.status, sa.func.count()).where(
                ~WebhookDelivery.batch_item).group_by(WebhookDelivery.status)).all())  # fmt: skip
        print(f"events: {len(expected)} judgments with the endpoint on, {len(received & expected)} delivered "
              f"in {receiver.messages} messages (drained {drained_after:.1f} s after the load), "
              f"lost {len(expected - received)}, duplicated {len(receiver.ids) - len(received)}, "
              f"bad signatures {receiver.bad_signatures}, messages by status {statuses}")  # fmt: skip
        p99_change = percentile(with_hooks["submit"], 0.99) / percentile(without["submit"], 0.99) - 1
        print(f"submit p99 with/without: {p99_change:+.0%}")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        drop_database(args, url)


if __name__ == "__main__":
    main()
