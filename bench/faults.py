"""A PostgreSQL outage under load: what the raters saw and what the database kept.

Creates a database of its own, migrates it, starts `uvicorn app.asgi:app` whose only way to PostgreSQL is a TCP
proxy (tests/tcp_proxy.py), lets `--raters` raters claim and submit over HTTP, then cuts the proxy for
`--outage-seconds` (every open connection dropped, new ones refused: a restart as this server sees it, while the
shared PostgreSQL cluster stays up for everyone else) and restores it. Raters retry an unanswered submit of the
same assignment (submits are idempotent). When the queue is empty it prints:

- judgments acknowledged (a 200/201 answer) vs stored, and acknowledged-but-not-stored (must be 0);
- comparisons holding more judgments than they require (must be 0);
- the outage as the clients saw it (first failed answer to first good answer after the restore) vs the cut;
- answers by status during the run: 503s (expected during the outage) vs 500s (must be 0);
and drops the database.

    .venv/bin/python bench/faults.py [--raters 20] [--comparisons 1500] [--outage-seconds 5] [--warmup-seconds 3]
"""

import dataclasses
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from app.migrate import upgrade  # noqa: E402
from tests.tcp_proxy import TcpProxy  # noqa: E402


@dataclass
class Args:
    raters: int = 20
    """Concurrent raters (threads), each with its own API token."""
    comparisons: int = 1500
    """Pairwise comparisons to rate."""
    overlap: int = 2
    """Judgments per comparison (max_overlap the same: no adaptive extra rater)."""
    warmup_seconds: float = 3.0
    """Load before the cut."""
    outage_seconds: float = 5.0
    """How long the proxy stays cut."""
    max_seconds: float = 300.0
    """Give up waiting for the queue to empty after this long."""
    pg_url: str = os.environ.get("RANKFORGE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    """Admin connection to PostgreSQL; the benchmark's database is created beside it and dropped after."""


def parse_args() -> Args:
    args = Args()
    argv = sys.argv[1:]
    fields = {f.name: f for f in dataclasses.fields(Args)}
    for i in range(0, len(argv), 2):
        name = argv[i].removeprefix("--").replace("-", "_")
        setattr(args, name, type(getattr(args, fields[name].name))(argv[i + 1]))
    return args


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_tokens(url: str, n_raters: int) -> tuple[str, list[str]]:
    """An admin and n raters with API tokens, written straight into the database."""
    from app.auth.service import create_api_token
    from app.db import session_scope
    from app.users.service import create_user

    with session_scope(url) as session:
        admin = create_user(session, "bench-admin", "admin", "bench-admin-pass", actor=None)
        admin_token = create_api_token(session, admin, "bench")
        tokens = []
        for i in range(n_raters):
            rater = create_user(session, f"bench-rater-{i}", "annotator", f"bench-rater-pass-{i}", actor=None)
            tokens.append(create_api_token(session, rater, "bench"))
    return admin_token, tokens


class Load:
    def __init__(self, url: str, project_id: int, tokens: list[str], deadline: float):
        self.url, self.project_id, self.tokens, self.deadline = url, project_id, tokens, deadline
        self.acknowledged: set[int] = set()
        self.statuses: dict[str, int] = {}
        self.failure_times: list[float] = []
        self.success_times: list[float] = []
        self.lock = threading.Lock()

    def note(self, status: int | str) -> None:
        now = time.monotonic()
        with self.lock:
            key = str(status)
            self.statuses[key] = self.statuses.get(key, 0) + 1
            failed = not isinstance(status, int) or status >= 500
            (self.failure_times if failed else self.success_times).append(now)

    def rater(self, token: str) -> None:
        with httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            while time.monotonic() < self.deadline:
                try:
                    task = http.get(f"/api/v1/projects/{self.project_id}/tasks/next")
                except httpx.HTTPError as error:
                    self.note(type(error).__name__)
                    time.sleep(0.2)
                    continue
                self.note(task.status_code)
                if task.status_code == 204:
                    return
                if task.status_code != 200:
                    time.sleep(0.2)
                    continue
                body = task.json()
                ids = [o["id"] for o in body["options"]]
                while time.monotonic() < self.deadline:
                    try:
                        sent = http.post(f"/api/v1/assignments/{body['assignment_id']}/judgment",
                                         json={"ranking": [[ids[0]], ids[1:]], "time_spent_ms": 3000})  # fmt: skip
                    except httpx.HTTPError as error:
                        self.note(type(error).__name__)
                        time.sleep(0.2)
                        continue
                    self.note(sent.status_code)
                    if sent.status_code in (200, 201):
                        with self.lock:
                            self.acknowledged.add(body["assignment_id"])
                        break
                    if sent.status_code < 500:
                        break  # e.g. the lease went to someone else while the database was down
                    time.sleep(0.2)


def main() -> None:
    args = parse_args()
    admin_engine = sa.create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
    name = f"rankforge_bench_faults_{uuid.uuid4().hex[:8]}"
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = args.pg_url.rsplit("/", 1)[0] + "/" + name
    server = proxy = None
    workdir = tempfile.TemporaryDirectory(prefix="rankforge-bench-faults-")
    try:
        upgrade(url)
        admin_token, tokens = make_tokens(url, args.raters)
        parsed = sa.engine.make_url(url)
        proxy = TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
        proxied = parsed.set(host=proxy.host, port=proxy.port).render_as_string(hide_password=False)
        port = free_port()
        log_path = Path(workdir.name) / "server.log"
        env = os.environ | {"RANKFORGE_DATABASE_URL": proxied, "RANKFORGE_DATA_DIR": str(Path(workdir.name) / "data")}
        with open(log_path, "w") as log:
            server = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.asgi:app", "--host", "127.0.0.1",
                                       "--port", str(port), "--log-level", "warning"], cwd=ROOT, env=env,
                                      stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        admin = {"Authorization": f"Bearer {admin_token}"}
        project = httpx.post(base + "/api/v1/projects", headers=admin, timeout=30,
                             json={"name": "faults", "mode": "pairwise", "overlap": args.overlap,
                                   "max_overlap": args.overlap, "allow_ties": False}).json()  # fmt: skip
        lines = "".join(json.dumps({"prompt": f"Question {i}?", "external_id": f"q{i}",
                                    "completions": [{"text": f"answer a {i}", "model": "a"},
                                                    {"text": f"answer b {i}", "model": "b"}]}) + "\n"
                        for i in range(args.comparisons))  # fmt: skip
        imported = httpx.post(f"{base}/api/v1/projects/{project['id']}/import", params={"format": "native"},
                              content=lines.encode(), timeout=120,
                              headers=admin | {"Content-Type": "application/x-ndjson"})  # fmt: skip
        imported.raise_for_status()

        load = Load(base, project["id"], tokens, deadline=time.monotonic() + args.max_seconds)
        threads = [threading.Thread(target=load.rater, args=(t,), daemon=True) for t in tokens]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(args.warmup_seconds)
        acknowledged_before = len(load.acknowledged)
        cut_at = time.monotonic()
        proxy.cut()
        time.sleep(args.outage_seconds)
        proxy.restore()
        restored_at = time.monotonic()
        for thread in threads:
            thread.join(max(1.0, load.deadline - time.monotonic()))
        finished = time.monotonic()
        recovered = httpx.get(base + "/healthz", timeout=10).status_code == 200

        engine = sa.create_engine(url)
        with engine.connect() as conn:
            stored = set(conn.execute(sa.text("SELECT assignment_id FROM judgment")).scalars())
            overfilled = conn.execute(sa.text(
                "SELECT count(*) FROM (SELECT c.id FROM comparison c JOIN judgment j ON j.comparison_id = c.id "
                "GROUP BY c.id, c.required HAVING count(*) > c.required) x")).scalar()  # fmt: skip
            complete = conn.execute(sa.text("SELECT count(*) FROM comparison WHERE n_judgments >= required")).scalar()
        engine.dispose()

        failures_in_outage = [t for t in load.failure_times if t >= cut_at]
        first_failure = min(failures_in_outage) if failures_in_outage else None
        first_success_after = min((t for t in load.success_times if t >= restored_at), default=None)
        seen = (first_success_after - first_failure) if first_failure and first_success_after else None
        statuses = dict(sorted(load.statuses.items()))
        n_503 = load.statuses.get("503", 0)
        n_500 = load.statuses.get("500", 0)
        other_failures = sum(n for s, n in load.statuses.items() if s not in ("503", "500") and s[:1] not in "12")
        print(f"raters {args.raters}, comparisons {args.comparisons} x overlap {args.overlap}; "
              f"run {finished - started:.1f} s, cut after {cut_at - started:.1f} s "
              f"({acknowledged_before} judgments acknowledged by then)")  # fmt: skip
        print(f"judgments acknowledged {len(load.acknowledged)}, stored {len(stored)}, "
              f"acknowledged but not stored {len(load.acknowledged - stored)}, "
              f"stored without an acknowledgment {len(stored - load.acknowledged)} (in flight at the cut)")  # fmt: skip
        print(f"comparisons complete {complete} of {args.comparisons}; over their overlap {overfilled}")
        print(f"outage: proxy cut {restored_at - cut_at:.2f} s; as the clients saw it "
              + (f"{seen:.2f} s (first failed answer to first good answer after the restore); "
                 f"recovered {first_success_after - restored_at:.2f} s after the restore" if seen is not None
                 else "no failed answer seen"))  # fmt: skip
        print(f"answers: 503 {n_503}, 500 {n_500}, other failures {other_failures}; all {statuses}")
        print(f"server recovered without a restart: {recovered}")
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        if proxy is not None:
            proxy.close()
        from app.db import dispose_engines

        dispose_engines()
        with admin_engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin_engine.dispose()
        workdir.cleanup()


if __name__ == "__main__":
    main()
