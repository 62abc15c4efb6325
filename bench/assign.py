"""Benchmark of the rating loop (next task, then submit) over the HTTP API, on PostgreSQL.

For each queue size it creates a database of its own, runs the migrations, seeds the comparisons and
the raters with bulk SQL (INSERT ... SELECT over generate_series), starts a real uvicorn on it and
simulates raters with asyncio and a minimal HTTP/1.1 client (`--client httpx` for httpx.AsyncClient):

- open loop: `--raters` raters, each doing next-task, "thinking" `--think` seconds, submitting, once per
  cycle; the cycles are staggered so requests arrive at `--rate` per second in total (half next-task,
  half submit) whatever the server's answers. Latency is measured from each request's scheduled send
  time (a submit's is the later of next-task + think and next-task's answer; a rater whose previous
  cycle ran late sends late, and that lateness counts), so a stall is charged to every request it
  delays (no coordinated omission).
- closed loop: `--closed-raters` raters doing next-task then submit as fast as they can: judgments per
  second at saturation.
- threads: the same closed loop with one OS thread and one `httpx.Client` per rater (the kind of client
  real integrations use), once per count in `--thread-raters` (10 and 50 by default).

Every phase also reports the server's CPU per judgment: the CPU time (utime + stime from /proc) of the
server's process tree and of the PostgreSQL backends connected to the benchmark's database, sampled
every 0.2 s during the phase (a backend that ends between samples loses at most its last 0.2 s), divided
by the judgments stored. It needs the server and PostgreSQL on this machine; elsewhere it prints "-".

Afterwards it counts overlap violations (comparisons with more judgments than required, a rater judging a
comparison twice, counters that disagree with the rows) and drops the database.

    .venv/bin/python bench/assign.py [--sizes 1000,100000] [--rate 200] [--duration 30] [--workers 1,2]
    .venv/bin/python bench/assign.py --sizes 20000 --phases threads --thread-raters 10,50   # issue 17's figures
"""

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from app.auth.service import hash_password, new_token, sha256_hex  # noqa: E402
from app.migrate import upgrade  # noqa: E402

DEFAULT_WORKERS = 2
"""Measured on the 2-core dev machine: see the report printed by this script (`--workers 1,2`)."""


@dataclass
class Args:
    sizes: str = "1000,100000"
    """Comparisons in the queue, comma-separated: one database and one run per size."""
    rate: float = 200.0
    """Open loop: HTTP requests per second in total, half next-task and half submit (rate/2 judgments/s)."""
    duration: float = 30.0
    """Open loop: seconds during which cycles start."""
    raters: int = 1000
    """Open loop: raters; each starts a cycle every raters / (rate / 2) seconds (10 s by default)."""
    think: float = 8.0
    """Open loop: seconds between a rater's task arriving and its submit (the lease is held meanwhile)."""
    closed_raters: int = 50
    """Closed loop: raters working as fast as they can."""
    closed_duration: float = 20.0
    """Closed loop: seconds."""
    workers: str = str(DEFAULT_WORKERS)
    """uvicorn worker processes, comma-separated to compare several (e.g. 1,2)."""
    overlap: int = 3
    """Judgments wanted per comparison; raised for a size whose queue would otherwise drain during a run."""
    pg_url: str = os.environ.get("RANKFORGE_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    """An existing PostgreSQL database to connect to for CREATE/DROP DATABASE."""
    seed: int = 0
    """Seed of the rankings the raters submit."""
    client: str = "raw"
    """Load generator's HTTP client: raw (asyncio streams, cheap) or httpx (httpx.AsyncClient)."""
    launch: str = "tcp-nodelay"
    """How to start several workers: tcp-nodelay (uvicorn's server and supervisor on a socket bound as TCP)
    or uvicorn (`python -m uvicorn --workers N`, which leaves Nagle on: see TCP_NODELAY_LAUNCHER)."""
    request_timeout: float = 60.0
    """Seconds before a request counts as an error (a stalled server must not hang the benchmark)."""
    thread_raters: str = "10,50"
    """Closed loop with one thread and one httpx.Client per rater (what real integrations do): rater counts,
    comma-separated, one phase each."""
    thread_duration: float = 20.0
    """Thread-per-rater closed loop: seconds per phase."""
    phases: str = "open,closed,threads"
    """Phases to run, comma-separated: open (asyncio open loop), closed (asyncio closed loop), threads."""


def parse_args() -> Args:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for f in dataclasses.fields(Args):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    return Args(**vars(parser.parse_args()))


# ---------------------------------------------------------------------------------------------------------
# Database: create, seed with bulk SQL, check, drop
# ---------------------------------------------------------------------------------------------------------


def create_database(admin_url: str) -> str:
    name = f"rankforge_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return admin_url.rsplit("/", 1)[0] + "/" + name


def drop_database(admin_url: str, url: str) -> None:
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    admin.dispose()


def seed_raters(engine: sa.Engine, n: int) -> list[dict[str, str]]:
    """n annotators sharing one precomputed password hash, each with an API token; returns auth headers."""
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO \"user\" (username, password_hash, role, is_active, created_at) "
            "SELECT 'bench' || g, :hash, 'annotator', true, now() FROM generate_series(1, :n) g"
        ), {"hash": hash_password("bench-password"), "n": n})  # fmt: skip
        user_ids = conn.execute(
            sa.text("SELECT id FROM \"user\" WHERE username LIKE 'bench%' ORDER BY id")
        ).scalars()
        tokens = {user_id: new_token("rf_") for user_id in user_ids}
        conn.execute(
            sa.text("INSERT INTO api_token (user_id, name, token_hash, prefix, created_at) "
                    "VALUES (:user_id, 'bench', :token_hash, :prefix, now())"),
            [{"user_id": u, "token_hash": sha256_hex(t), "prefix": t[:7]} for u, t in tokens.items()],
        )  # fmt: skip
    return [{"Authorization": f"Bearer {token}"} for token in tokens.values()]


def _other_columns(engine: sa.Engine, table: str, given: str) -> tuple[str, str]:
    """(", col, ...", ", value, ...") for the NOT NULL columns without a server default that the seed's INSERT
    does not name (added by later migrations), valued as the model's Python default: the checkout's own schema,
    whichever commit it is."""
    from app.models import Base

    named = {c.strip() for c in given.split(",")}
    model = Base.metadata.tables[table]
    cols, vals = [], []
    for column in sa.inspect(engine).get_columns(table):
        name = column["name"]
        if name in named or column["nullable"] or column["default"] is not None or name == "id":
            continue
        default = model.c[name].default
        value = default.arg(None) if default is not None and default.is_callable else getattr(default, "arg", None)
        if isinstance(value, dict | list):
            literal = "'" + json.dumps(value).replace("'", "''") + "'"
        elif isinstance(value, bool):
            literal = "true" if value else "false"
        elif isinstance(value, int | float):
            literal = repr(value)
        elif isinstance(value, str):
            literal = "'" + value.replace("'", "''") + "'"
        else:
            raise ValueError(f"bench seed: no value for {table}.{name} (NOT NULL, no default)")
        cols.append(name)
        vals.append(literal)
    return "".join(", " + c for c in cols), "".join(", " + v for v in vals)


def seed_project(engine: sa.Engine, slug: str, comparisons: int, overlap: int, *, analyze: bool = True) -> int:
    """A pairwise project with `comparisons` comparisons of two ~500-character completions, all in SQL
    (then ANALYZE, unless `analyze` is false: the statistics a bulk load leaves when nothing analyzes)."""
    with engine.begin() as conn:
        cols, vals = _other_columns(engine, "project", "slug, name, description, mode, overlap, max_overlap, "
                                    "allow_ties, attributes, gold_rate, lease_seconds, members_only, status, "
                                    "guideline_version, schedule, created_at")  # fmt: skip
        project_id = conn.execute(sa.text(
            "INSERT INTO project (slug, name, description, mode, overlap, max_overlap, allow_ties, attributes, "
            f"gold_rate, lease_seconds, members_only, status, guideline_version, schedule, created_at{cols}) "
            "VALUES (:slug, :slug, '', 'pairwise', :overlap, :overlap, false, '[]', 0, 1200, false, 'active', 1, "
            f"'{{}}', now(){vals}) RETURNING id"
        ), {"slug": slug, "overlap": overlap}).scalar_one()  # fmt: skip
        cols, vals = _other_columns(engine, "prompt", "project_id, external_id, messages, is_chat, metadata, "
                                    "priority, created_at")  # fmt: skip
        conn.execute(sa.text(
            f"INSERT INTO prompt (project_id, external_id, messages, is_chat, metadata, priority, created_at{cols}) "
            "SELECT :p, 'q' || g, jsonb_build_array(jsonb_build_object('role', 'user', 'content', "
            f"'Question ' || g || ': ' || repeat('why is the sky blue? ', 10))), false, '{{}}', 0, now(){vals} "
            "FROM generate_series(1, :n) g"
        ), {"p": project_id, "n": comparisons})  # fmt: skip
        cols, vals = _other_columns(engine, "completion", "prompt_id, text, model_name, params, metadata, created_at")
        conn.execute(sa.text(
            f"INSERT INTO completion (prompt_id, text, model_name, params, metadata, created_at{cols}) "
            "SELECT p.id, 'Answer ' || j || ' to ' || p.external_id || ': ' || repeat('Rayleigh scattering. ', 24), "
            f"'model-' || j, '{{}}', '{{}}', now(){vals} FROM prompt p CROSS JOIN generate_series(0, 1) j "
            "WHERE p.project_id = :p"
        ), {"p": project_id})  # fmt: skip
        cols, vals = _other_columns(engine, "comparison", "project_id, prompt_id, completion_ids, is_gold, required, "
                                    "n_judgments, n_leases, priority, score_gap, metadata, created_at")  # fmt: skip
        conn.execute(sa.text(
            "INSERT INTO comparison (project_id, prompt_id, completion_ids, is_gold, required, n_judgments, n_leases, "
            f"priority, score_gap, metadata, created_at{cols}) "
            f"SELECT :p, c.prompt_id, jsonb_agg(c.id ORDER BY c.id), false, :overlap, 0, 0, 0, 1e9, '{{}}', now(){vals} "
            "FROM completion c JOIN prompt p ON p.id = c.prompt_id WHERE p.project_id = :p "
            "GROUP BY c.prompt_id ORDER BY c.prompt_id"
        ), {"p": project_id, "overlap": overlap})  # fmt: skip
    if analyze:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")
    return project_id


def overlap_violations(engine: sa.Engine, project_id: int) -> dict[str, int]:
    queries = {
        "over_filled": "SELECT count(*) FROM (SELECT c.id FROM comparison c JOIN judgment j ON j.comparison_id = c.id "
                       "WHERE c.project_id = :p GROUP BY c.id, c.required HAVING count(*) > c.required) x",
        "judged_twice": "SELECT count(*) FROM (SELECT 1 FROM judgment WHERE project_id = :p "
                        "GROUP BY comparison_id, rater_id HAVING count(*) > 1) x",
        "bad_counters": "SELECT count(*) FROM comparison c WHERE c.project_id = :p AND c.n_judgments <> "
                        "(SELECT count(*) FROM judgment j WHERE j.comparison_id = c.id)",
    }  # fmt: skip
    with engine.connect() as conn:
        return {
            name: conn.execute(sa.text(sql), {"p": project_id}).scalar_one() for name, sql in queries.items()
        }


def judgments_in(engine: sa.Engine, project_id: int) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT count(*) FROM judgment WHERE project_id = :p"), {"p": project_id}
        ).scalar()


# ---------------------------------------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# `python -m uvicorn --workers N` (and `uvicorn.run(workers=N)`, as `rankforge serve` does) binds its
# listening socket with protocol 0, so asyncio never sets TCP_NODELAY on accepted connections (it checks
# for IPPROTO_TCP): Nagle then holds a response's body behind its headers until the client's delayed ACK,
# ~40 ms per request. This launcher runs the same uvicorn server and supervisor on a socket bound as TCP.
TCP_NODELAY_LAUNCHER = """
import socket, sys
import uvicorn
from uvicorn.supervisors import Multiprocess

host, port, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
config = uvicorn.Config("app.asgi:app", host=host, port=port, workers=workers, log_level="warning")
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind((host, port))
sock.set_inheritable(True)
Multiprocess(config, sockets=[sock]).run()
"""


def server_command(launch: str, port: int, workers: int) -> list[str]:
    if (
        launch == "uvicorn" or workers == 1
    ):  # one worker: uvicorn binds through asyncio, which sets TCP_NODELAY
        return [sys.executable, "-m", "uvicorn", "app.asgi:app", "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(workers), "--log-level", "warning"]  # fmt: skip
    if launch == "tcp-nodelay":
        return [sys.executable, "-c", TCP_NODELAY_LAUNCHER, "127.0.0.1", str(port), str(workers)]
    raise ValueError(f"--launch must be uvicorn or tcp-nodelay, got {launch!r}")


def start_server(database_url: str, workers: int, data_dir: str, launch: str) -> tuple[subprocess.Popen, str]:
    """The server in a process group of its own (so stopping it ends every worker), logging to data_dir."""
    port = free_port()
    env = os.environ | {"RANKFORGE_DATABASE_URL": database_url, "RANKFORGE_DATA_DIR": data_dir}
    with open(Path(data_dir) / "server.log", "wb") as log:
        process = subprocess.Popen(server_command(launch, port, workers), cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}: {server_errors(data_dir)}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    stop_server(process)
    raise RuntimeError("the server did not answer /healthz within 60 s")


def stop_server(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group; SIGKILL to it if a worker is still stuck after 15 s."""
    os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def server_errors(data_dir: str) -> str:
    """How many tracebacks the server logged, and the last exception line."""
    lines = (Path(data_dir) / "server.log").read_text(errors="replace").splitlines()
    exceptions = [line for line in lines if line and not line[0].isspace() and "Error" in line.split(":")[0]]
    count = sum(line.startswith("Traceback") for line in lines)
    return f"{count} tracebacks" + (f", last: {exceptions[-1][:300]}" if exceptions else "")


# ---------------------------------------------------------------------------------------------------------
# Server CPU: the server's process tree and its PostgreSQL backends, from /proc
# ---------------------------------------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, utime + stime in clock ticks) of a process, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), int(fields[11]) + int(fields[12])


def _process_tree(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None:
                children.setdefault(stat[0], []).append(int(entry))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo += children.get(pid, [])
    return tree


class CpuMeter:
    """CPU seconds of the server's process tree and of the database's PostgreSQL backends during a phase.

    A thread samples every `interval` s: each process's first and last utime + stime seen; a process born
    during the phase counts from zero. Backends are found in pg_stat_activity (through the admin database, so
    the sampler's own backend is not counted)."""

    def __init__(self, server_pid: int, admin_url: str, database: str, interval: float = 0.2):
        self.server_pid, self.database, self.interval = server_pid, database, interval
        self.admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.StaticPool)
        self.first: dict[tuple[str, int], int] = {}
        self.last: dict[tuple[str, int], int] = {}
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.available = os.path.exists(f"/proc/{server_pid}/stat")

    def _backends(self) -> list[int]:
        with self.admin.connect() as conn:
            return list(conn.execute(sa.text("SELECT pid FROM pg_stat_activity WHERE datname = :d"),
                                     {"d": self.database}).scalars())  # fmt: skip

    def _sample(self, initial: bool) -> None:
        pids = [("app", pid) for pid in _process_tree(self.server_pid)] + [("db", pid) for pid in self._backends()]
        for key in pids:
            stat = _proc_stat(key[1])
            if stat is None:
                continue
            if key not in self.first:
                self.first[key] = stat[1] if initial else 0
            self.last[key] = stat[1]

    def __enter__(self) -> "CpuMeter":
        if self.available:
            self._sample(initial=True)
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()
        return self

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            self._sample(initial=False)

    def __exit__(self, *exc) -> None:
        if self.thread is not None:
            self.stop.set()
            self.thread.join()
            self._sample(initial=False)
        self.admin.dispose()

    def seconds(self) -> dict[str, float]:
        """{"app": s, "db": s}; NaN when /proc could not show the server (not on this machine)."""
        if not self.available:
            return {"app": math.nan, "db": math.nan}
        total = {"app": 0, "db": 0}
        for key, last in self.last.items():
            total[key[0]] += last - self.first[key]
        return {kind: ticks / CLOCK_TICKS for kind, ticks in total.items()}


# ---------------------------------------------------------------------------------------------------------
# Raters
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Calls:
    """Latencies (ms) and outcomes of one phase."""

    next_ms: list[float] = field(default_factory=list)
    submit_ms: list[float] = field(default_factory=list)
    send_lag_ms: list[float] = field(default_factory=list)
    """How late the load generator itself sent requests (its own saturation shows here)."""
    statuses: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    judgments: int = 0


def ranking_for(task: dict, rng: random.Random) -> list[list[int]]:
    ids = [option["id"] for option in task["options"]]
    rng.shuffle(ids)
    return [[i] for i in ids]


class RawHttpClient:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams, with a pool of idle connections.

    The load generator shares the 2 cores with the server and PostgreSQL, so it must cost far less than
    what it measures: httpx.AsyncClient spends ~5 ms of CPU per request here, about as much as the server.
    Enough for uvicorn's answers (Content-Length bodies); anything else raises.
    """

    def __init__(self, url: str):
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def request(self, method: str, path: str, headers: dict, payload=None) -> tuple[int, bytes]:
        body = json.dumps(payload).encode() if payload is not None else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        if payload is not None:
            head += "Content-Type: application/json\r\n"
        request = head.encode() + b"\r\n" + body
        while True:
            reused = bool(self.idle)
            reader, writer = (
                self.idle.pop() if reused else await asyncio.open_connection(self.host, self.port)
            )
            writer.write(request)
            status_line = await reader.readline()
            if status_line or not reused:
                break
            writer.close()  # the server closed this idle keep-alive connection meanwhile: use another one
        try:
            status = int(status_line.split(b" ", 2)[1])
            length, keep_alive = 0, True
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection":
                    keep_alive = b"close" not in value.lower()
                elif name == b"transfer-encoding":
                    raise ValueError("chunked responses are not supported by this client")
            content = await reader.readexactly(length) if length else b""
        except BaseException:
            writer.close()
            raise
        if keep_alive:
            self.idle.append((reader, writer))
        else:
            writer.close()
        return status, content

    async def aclose(self) -> None:
        for _, writer in self.idle:
            writer.close()


class HttpxClient:
    """The same interface on httpx.AsyncClient (`--client httpx`), to compare."""

    def __init__(self, url: str, connections: int = 1024):
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.client = httpx.AsyncClient(base_url=url, limits=limits, timeout=120)

    async def request(self, method: str, path: str, headers: dict, payload=None) -> tuple[int, bytes]:
        response = await self.client.request(method, path, headers=headers, json=payload)
        return response.status_code, response.content

    async def aclose(self) -> None:
        await self.client.aclose()


def make_client(kind: str, url: str):
    return {"raw": RawHttpClient, "httpx": HttpxClient}[kind](url)


async def sleep_until(loop: asyncio.AbstractEventLoop, when: float) -> None:
    delay = when - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def one_judgment(client, project_id: int, headers: dict, calls: Calls, rng: random.Random, next_at: float,
                       think: float, timeout: float) -> bool:  # fmt: skip
    """next-task (scheduled at next_at), think, submit; False when the queue had nothing for this rater."""
    loop = asyncio.get_running_loop()
    await sleep_until(loop, next_at)
    calls.send_lag_ms.append((loop.time() - next_at) * 1000)
    try:
        async with asyncio.timeout(timeout):
            status, content = await client.request(
                "GET", f"/api/v1/projects/{project_id}/tasks/next", headers
            )
    except (OSError, ValueError, asyncio.IncompleteReadError, httpx.HTTPError, TimeoutError) as error:
        calls.errors.append(f"next-task: {error!r}")
        return False
    received = loop.time()
    calls.next_ms.append((received - next_at) * 1000)
    calls.statuses[f"next {status}"] += 1
    if status != 200:
        if status != 204:
            calls.errors.append(f"next-task {status}: {content[:200]!r}")
        return False
    task = json.loads(content)
    submit_at = max(next_at + think, received)
    await sleep_until(loop, submit_at)
    try:
        async with asyncio.timeout(timeout):
            status, content = await client.request("POST", f"/api/v1/assignments/{task['assignment_id']}/judgment",
                                                   headers, {"ranking": ranking_for(task, rng)})  # fmt: skip
    except (OSError, ValueError, asyncio.IncompleteReadError, httpx.HTTPError, TimeoutError) as error:
        calls.errors.append(f"submit: {error!r}")
        return False
    calls.submit_ms.append((loop.time() - submit_at) * 1000)
    calls.statuses[f"submit {status}"] += 1
    if status == 201:
        calls.judgments += 1
    elif status != 200:
        calls.errors.append(f"submit {status}: {content[:200]!r}")
    return True


async def open_loop(url: str, project_id: int, raters: list[dict], args: Args) -> Calls:
    """Rater i starts cycles at i / pair_rate + k * cycle while that is before `duration`."""
    calls, rng = Calls(), random.Random(args.seed)
    pair_rate = args.rate / 2
    cycle = len(raters) / pair_rate
    if args.think >= cycle:
        raise ValueError(f"--think {args.think} must be shorter than a rater's cycle ({cycle:.1f} s)")
    client = make_client(args.client, url)
    start = asyncio.get_running_loop().time() + 0.5

    async def rater(i: int, headers: dict) -> None:
        next_at = start + i / pair_rate
        while next_at < start + args.duration:
            await one_judgment(
                client, project_id, headers, calls, rng, next_at, args.think, args.request_timeout
            )
            next_at += cycle

    try:
        await asyncio.gather(*(rater(i, headers) for i, headers in enumerate(raters)))
    finally:
        await client.aclose()
    return calls


async def closed_loop(
    url: str, project_id: int, raters: list[dict], duration: float, args: Args
) -> tuple[Calls, float]:
    """Each rater: next-task, submit at once, again, until `duration`; returns (calls, elapsed seconds)."""
    calls, rng = Calls(), random.Random(args.seed)
    client = make_client(args.client, url)
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def rater(headers: dict) -> None:
        while loop.time() - started < duration:
            if not await one_judgment(
                client, project_id, headers, calls, rng, loop.time(), 0.0, args.request_timeout
            ):
                return

    try:
        await asyncio.gather(*(rater(headers) for headers in raters))
    finally:
        await client.aclose()
    return calls, loop.time() - started


def thread_loop(url: str, project_id: int, raters: list[dict], duration: float, args: Args) -> tuple[Calls, float]:
    """Closed loop, one thread and one httpx.Client (keep-alive) per rater: next-task, submit, again, until
    `duration` or the rater's first 204. Latency is each request's own round trip."""
    calls, lock = Calls(), threading.Lock()
    start_line = threading.Barrier(len(raters) + 1)
    started = 0.0

    def rater(i: int, headers: dict) -> None:
        rng = random.Random(args.seed * 1000 + i)
        mine = Calls()
        with httpx.Client(base_url=url, headers=headers, timeout=args.request_timeout) as client:
            start_line.wait()
            while time.perf_counter() - started < duration:
                sent = time.perf_counter()
                try:
                    response = client.get(f"/api/v1/projects/{project_id}/tasks/next")
                except httpx.HTTPError as error:
                    mine.errors.append(f"next-task: {error!r}")
                    break
                mine.next_ms.append((time.perf_counter() - sent) * 1000)
                mine.statuses[f"next {response.status_code}"] += 1
                if response.status_code != 200:
                    if response.status_code != 204:
                        mine.errors.append(f"next-task {response.status_code}: {response.text[:200]}")
                    break
                task = response.json()
                sent = time.perf_counter()
                try:
                    response = client.post(f"/api/v1/assignments/{task['assignment_id']}/judgment",
                                           json={"ranking": ranking_for(task, rng)})  # fmt: skip
                except httpx.HTTPError as error:
                    mine.errors.append(f"submit: {error!r}")
                    break
                mine.submit_ms.append((time.perf_counter() - sent) * 1000)
                mine.statuses[f"submit {response.status_code}"] += 1
                if response.status_code == 201:
                    mine.judgments += 1
                elif response.status_code != 200:
                    mine.errors.append(f"submit {response.status_code}: {response.text[:200]}")
        with lock:
            calls.next_ms.extend(mine.next_ms)
            calls.submit_ms.extend(mine.submit_ms)
            calls.statuses.update(mine.statuses)
            calls.errors.extend(mine.errors)
            calls.judgments += mine.judgments

    threads = [threading.Thread(target=rater, args=(i, headers)) for i, headers in enumerate(raters)]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    start_line.wait()
    for thread in threads:
        thread.join()
    return calls, time.perf_counter() - started


# ---------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)]


def overlap_for(size: int, judgments_expected: float, args: Args) -> int:
    """Enough slots that the queue stays about `size` open comparisons during the run."""
    return max(args.overlap, math.ceil(3 * judgments_expected / size))


def run_size(size: int, workers_list: list[int], raters_n: int, args: Args) -> list[dict]:
    rows = []
    url = create_database(args.pg_url)
    database = url.rsplit("/", 1)[1]
    engine = sa.create_engine(url)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    thread_counts = [int(n) for n in args.thread_raters.split(",") if n.strip()] if "threads" in phases else []
    try:
        upgrade(url)
        started = time.perf_counter()
        raters = seed_raters(engine, raters_n)
        seeded_raters = time.perf_counter() - started
        print(f"\n== {size:,} comparisons; database {database}; {raters_n} raters seeded in "
              f"{seeded_raters:.2f} s", flush=True)  # fmt: skip
        for workers in workers_list:
            open_overlap = overlap_for(size, args.rate / 2 * args.duration, args)
            closed_overlap = overlap_for(size, 600 * args.closed_duration, args)
            thread_overlap = overlap_for(size, 300 * args.thread_duration, args)
            projects = {}
            started = time.perf_counter()
            if "open" in phases:
                projects["open"] = seed_project(engine, f"open-w{workers}", size, open_overlap)
            seeded = time.perf_counter() - started
            if "closed" in phases:
                projects["closed"] = seed_project(engine, f"closed-w{workers}", size, closed_overlap)
            for n in thread_counts:
                projects[f"threads{n}"] = seed_project(engine, f"threads{n}-w{workers}", size, thread_overlap)
            warmup_project = seed_project(engine, f"warmup-w{workers}", 200, 3)
            print(f"   workers={workers}: seeded {size:,} comparisons per phase in {seeded:.2f} s", flush=True)
            with tempfile.TemporaryDirectory() as data_dir:
                process, server = start_server(url, workers, data_dir, args.launch)
                try:
                    # Warm every worker's imports, statement caches and connection pool first.
                    asyncio.run(closed_loop(server, warmup_project, raters[-20:], 3.0, args))

                    context = (size, workers, engine, process.pid, args.pg_url, database)
                    if "open" in phases:
                        rows.append(measure(context, f"open {args.rate:g} req/s", open_overlap, projects["open"],
                                            open_loop_timed, server, raters[: args.raters], args.duration, args))
                    if "closed" in phases:
                        rows.append(measure(context, f"closed {args.closed_raters} raters", closed_overlap,
                                            projects["closed"], closed_loop_sync, server,
                                            raters[: args.closed_raters], args.closed_duration, args))  # fmt: skip
                    for n in thread_counts:
                        rows.append(measure(context, f"threads {n} raters", thread_overlap, projects[f"threads{n}"],
                                            thread_loop, server, raters[:n], args.thread_duration, args))
                finally:
                    stop_server(process)
                    print(f"   server log: {server_errors(data_dir)}", flush=True)
    finally:
        engine.dispose()
        drop_database(args.pg_url, url)
    return rows


def open_loop_timed(url: str, project_id: int, raters: list[dict], duration: float, args: Args) -> tuple[Calls, float]:
    return asyncio.run(open_loop(url, project_id, raters, args)), duration


def closed_loop_sync(url: str, project_id: int, raters: list[dict], duration: float, args: Args) -> tuple[Calls, float]:
    return asyncio.run(closed_loop(url, project_id, raters, duration, args))


def measure(context: tuple, phase: str, overlap: int, project_id: int, loop, url: str, raters: list[dict],
            duration: float, args: Args) -> dict:  # fmt: skip
    """One phase under the CPU meter; prints and returns its row."""
    size, workers, engine, server_pid, admin_url, database = context
    with CpuMeter(server_pid, admin_url, database) as cpu:
        calls, elapsed = loop(url, project_id, raters, duration, args)
    violations = overlap_violations(engine, project_id)
    row = summary(size, workers, phase, overlap, calls, violations, elapsed, engine, project_id, cpu.seconds())
    print_row(row)
    return row


def summary(size, workers, phase, overlap, calls: Calls, violations, elapsed, engine, project_id,
            cpu: dict[str, float] | None = None) -> dict:  # fmt: skip
    stored = judgments_in(engine, project_id)
    cpu = cpu or {"app": math.nan, "db": math.nan}
    per_judgment = {kind: seconds * 1000 / stored if stored else math.nan for kind, seconds in cpu.items()}
    return {
        "cpu_app_ms": per_judgment["app"], "cpu_db_ms": per_judgment["db"],
        "cpu_ms": per_judgment["app"] + per_judgment["db"],
        "size": size, "workers": workers, "phase": phase, "overlap": overlap,
        "next_n": len(calls.next_ms), "next_p50": percentile(calls.next_ms, 50),
        "next_p99": percentile(calls.next_ms, 99), "next_max": max(calls.next_ms, default=math.nan),
        "submit_n": len(calls.submit_ms), "submit_p50": percentile(calls.submit_ms, 50),
        "submit_p99": percentile(calls.submit_ms, 99), "submit_max": max(calls.submit_ms, default=math.nan),
        "send_lag_p99": percentile(calls.send_lag_ms, 99),
        "judgments_per_s": calls.judgments / elapsed, "judgments": calls.judgments,
        "stored": stored, "statuses": dict(calls.statuses),
        "errors": len(calls.errors), "first_errors": calls.errors[:3], "violations": violations,
    }  # fmt: skip


HEADER = (f"{'size':>8} {'wrk':>3} {'phase':<18} {'ovl':>3} {'next n':>7} {'p50':>6} {'p99':>6} {'max':>7} "
          f"{'submit n':>8} {'p50':>6} {'p99':>6} {'max':>7} {'lag p99':>7} {'judg/s':>7} {'cpu/j':>6} {'app':>5} {'db':>5} "
          f"{'err':>4} {'viol':>4}")  # fmt: skip


def print_row(row: dict) -> None:
    print(f"{row['size']:>8,} {row['workers']:>3} {row['phase']:<18} {row['overlap']:>3} {row['next_n']:>7} "
          f"{row['next_p50']:>6.1f} {row['next_p99']:>6.1f} {row['next_max']:>7.1f} {row['submit_n']:>8} "
          f"{row['submit_p50']:>6.1f} {row['submit_p99']:>6.1f} {row['submit_max']:>7.1f} {row['send_lag_p99']:>7.1f} "
          f"{row['judgments_per_s']:>7.1f} {row['cpu_ms']:>6.1f} {row['cpu_app_ms']:>5.1f} {row['cpu_db_ms']:>5.1f} "
          f"{row['errors']:>4} {sum(row['violations'].values()):>4}", flush=True)  # fmt: skip
    if row["errors"] or sum(row["violations"].values()) or row["stored"] != row["judgments"]:
        print(f"         statuses {row['statuses']}; violations {row['violations']}; stored {row['stored']} "
              f"judgments for {row['judgments']} 201s; first errors {row['first_errors']}", flush=True)  # fmt: skip


def main() -> None:
    args = parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    workers_list = [int(w) for w in args.workers.split(",")]
    raters_n = max(args.raters, args.closed_raters, 20)
    print(f"open loop: {args.raters} raters, {args.rate:g} requests/s ({args.rate / 2:g} next-task + "
          f"{args.rate / 2:g} submit), think {args.think:g} s, cycles starting for {args.duration:g} s; latency from "
          f"scheduled send time (asyncio, {args.client} HTTP client). closed loop: {args.closed_raters} raters for "
          f"{args.closed_duration:g} s. Server: uvicorn, workers {args.workers} (several started by {args.launch}). "
          f"Times in ms. {os.cpu_count()} CPUs, load average before: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)  # fmt: skip
    print(HEADER)
    rows = []
    for size in sizes:
        rows += run_size(size, workers_list, raters_n, args)

    print("\nsummary (ms; lag = how late the load generator itself sent; cpu/j = server CPU ms per judgment, "
          "app = the server's processes, db = its PostgreSQL backends; viol = overlap violations)")
    print(HEADER)
    for row in rows:
        print_row(row)
    if len(workers_list) > 1:
        open_rows = [r for r in rows if r["phase"].startswith("open")]
        best = min(workers_list, key=lambda w: statistics.fmean(
            max(r["next_p99"], r["submit_p99"]) for r in open_rows if r["workers"] == w))  # fmt: skip
        print(f"better worker count by open-loop p99: {best}")
    print(f"workers used by default: {DEFAULT_WORKERS}; this run: {args.workers}")
    total_violations = sum(sum(r["violations"].values()) for r in rows)
    print(f"overlap violations found: {total_violations}")
    if total_violations or any(r["errors"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()


def complete_insert(engine: sa.Engine, statement: str) -> str:
    """A SEED_SQL INSERT ... SELECT with the NOT NULL columns later migrations added (`_other_columns`: their
    model defaults) appended to its column list and its outer select list."""
    match = re.match(r'\s*INSERT INTO ("?\w+"?) \(([^)]*)\)', statement)
    if match is None:
        return statement
    cols, vals = _other_columns(engine, match.group(1).strip('"'), match.group(2))
    if not cols:
        return statement
    head = statement[:match.end() - 1] + cols + ")"
    rest = statement[match.end():]
    select_from = re.search(r"\s+FROM\s", rest)
    return head + rest[:select_from.start()] + vals + rest[select_from.start():]
