"""Benchmark of the figures at scale (issue 25, ten million judgments), on PostgreSQL.

Creates a database of its own, runs the migrations and seeds `--judgments` human pairwise judgments with
bench/stats.py's INSERT ... SELECT over generate_series (raters, prompts, two completions from `--models` models,
comparisons, `--overlap` judgments each), then builds the battle tallies (app.judgments.tallies.rebuild: the
seed bypasses the ORM, as the migration's backfill would for existing data), all in one transaction and the way
pg_restore loads a dump (`bulk_load`): the big tables' foreign keys, unique constraints and secondary indexes are
dropped first and recreated from their own definitions after, so the schema ends up exactly as the migrations left
it (`pg_dump -s` of a seeded and of a migrated empty database differ in nothing). 10M judgments seed in about
13 min under load 7 on 2 cores (74 min row by row through the indexes before); `--sections seed` only seeds a
`--keep-db` database. It then prints:

- worker: the idle task's computation of the cached figures (app.quality.figures.refresh: project_stats,
  dashboard and the leaderboard's every-battle parts), what a request of a large project no longer does;
- statistics endpoint, dashboard: `app.quality.figures.figures` as the API routes call it (the cached row; a
  project at or under SYNC_MAX_JUDGMENTS is computed per request instead), cold (a new engine and connection)
  and warm (median of 5 calls);
- leaderboard: `app.quality.figures.leaderboard` as the API calls it (ratings fitted on the tallies with 1000
  bootstrap replicates, the rest cached), cold and warm; and, once, the leaderboard computed from every battle
  (what the worker does for it, and what a request did before);
- export of every pair (`build_snapshot`, JSONL; `--export-format parquet|both`) in a child process: pairs, time,
  rows/s, the processes it used (app.datasets.export_parts) and their peak memory together (bench/export.py's
  `run_measured`: resident and proportional sizes sampled from /proc; and the kernel's peaks), the load average around it, and where its rater weights came
  from (the worker's cached statistics when current, which the figures section has just refreshed; else fitted
  in the export, a range of comparisons at a time: app.quality.service.rater_reliability);
- the rating loop: judgments/s with `--raters` raters (one thread and HTTP client each, bench/assign.py's thread
  loop) against `--web` uvicorn processes, on a fresh queue (a new project) in this database and in an empty
  database, `--loop-rounds` runs on each, alternating (20 s runs on 2 shared cores are noisy): each run's rate and
  CPU per judgment (web processes, database backends), then the medians. The raters (`loop-rater-<n>`) are reused on
  a kept database, so the section runs again on it (it adds projects, never edits project 1). A run during which
  another session held a transaction open on the database says so: the queue's replaced row versions cannot be
  cleaned up meanwhile, and every claim walks the dead index entries of the comparisons filled so far (at 10M
  judgments a streaming export or the worker's figures hold one for minutes).

Service functions are timed in-process (no HTTP, no auth): the endpoints add their JSON encoding on top.

    .venv/bin/python bench/scale.py [--judgments 10000000] [--overlap 4] [--raters 50] [--web 2] [--keep-db NAME]
    .venv/bin/python bench/scale.py --judgments 100000 --loop-seconds 10      # a quick check
    .venv/bin/python bench/scale.py --judgments 10000000 --overlap 1 --keep-db rf_10m --sections seed
    .venv/bin/python bench/scale.py --judgments 10000000 --overlap 1 --keep-db rf_10m --sections figures,export
                                                  # the issue's export of 10M pairs, rater weights from the cache
    .venv/bin/python bench/scale.py --judgments 10000000 --overlap 1 --keep-db rf_10m --sections export
                                                  # the same export fitting the rater weights itself (no cache)

A pairs export has one row per judged comparison (its votes aggregated): with `--overlap 4` that is judgments / 4
pairs; `--overlap 1` makes every judgment its own pair (10M pairs from 10M judgments).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from app.migrate import upgrade  # noqa: E402
from bench import assign  # noqa: E402
from bench import export as export_bench  # noqa: E402
from bench.stats import SEED_SQL  # noqa: E402

PG_URL = os.environ.get("RANKFORGE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SEEDED_TABLES = ("user", "project", "prompt", "completion", "comparison")
"""Tables bench/stats.py seeds with explicit ids: their sequences are moved past them afterwards."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judgments", type=int, default=10_000_000)
    parser.add_argument("--overlap", type=int, default=4)
    parser.add_argument("--seed-raters", type=int, default=200, help="raters of the seeded judgments")
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--raters", type=int, default=50, help="raters of the rating loop")
    parser.add_argument("--web", type=int, default=2, help="uvicorn worker processes for the rating loop")
    parser.add_argument("--loop-seconds", type=float, default=20.0)
    parser.add_argument("--loop-rounds", type=int, default=3,
                        help="rating loop runs on each database, alternating; the median is compared")
    parser.add_argument("--keep-db", default="", help="seed under this name when missing, reuse it when present")
    parser.add_argument("--sections", default="figures,export,loop",
                        help="what to time, comma-separated: figures, export, loop (e.g. --sections export); "
                             "seed: only seed the --keep-db database")  # fmt: skip
    parser.add_argument("--export-format", default="jsonl", choices=("jsonl", "parquet", "both"),
                        help="the export's files: JSONL alone (the streamed rows), Parquet, or both (a snapshot)")
    args = parser.parse_args()
    args.sections = set(args.sections.split(","))
    unknown = args.sections - {"figures", "export", "loop", "seed"}
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}")
    return args


def create_database(name: str) -> tuple[str, bool]:
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
        if not exists:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return PG_URL.rsplit("/", 1)[0] + "/" + name, bool(exists)


def seed(url: str, args: argparse.Namespace) -> None:
    engine = sa.create_engine(url)
    params = {"raters": args.seed_raters, "overlap": args.overlap, "comparisons": args.judgments // args.overlap,
              "models": args.models, "gold_permille": 20}  # fmt: skip
    started = time.perf_counter()
    from sqlalchemy.orm import Session

    from app.projects.schemas import ProjectCreate
    from app.projects.service import create_project

    with Session(engine) as db:  # through the service: the project table has grown columns SEED_SQL does not name
        project = create_project(db, ProjectCreate(name="bench", slug="bench", overlap=args.overlap,
                                                   max_overlap=args.overlap, allow_ties=False), actor=None)  # fmt: skip
        db.commit()
        assert project.id == 1, "a fresh database's first project"
    steps = {}
    with engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL maintenance_work_mem = '512MB'")  # the index builds at the end
        statements = []  # completed before the tables are locked (_complete inspects them on another connection)
        for statement in SEED_SQL:
            if statement != "ANALYZE" and not statement.lstrip().startswith("INSERT INTO project "):
                if statement.lstrip().startswith("INSERT INTO prompt "):
                    # bench/stats.py's prompts have no messages; an export needs the question (written by the
                    # INSERT, not by an UPDATE of every row afterwards)
                    assert PROMPT_NO_MESSAGES in statement, "bench/stats.py's prompt INSERT changed"
                    statement = statement.replace(PROMPT_NO_MESSAGES, PROMPT_MESSAGES)
                statements.append(assign.complete_insert(engine, statement))
        with bulk_load(conn, BULK_TABLES, steps):
            for statement in statements:
                t = time.perf_counter()
                conn.execute(sa.text(statement), params if ":" in statement else {})
                steps[" ".join(statement.split()[:3])] = time.perf_counter() - t
            for table in SEEDED_TABLES:
                conn.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('\"{table}\"', 'id'), "
                                     f"(SELECT max(id) FROM \"{table}\"))"))  # fmt: skip
            t = time.perf_counter()
            from app.judgments.tallies import rebuild

            rebuild(conn)
            steps["tallies"] = time.perf_counter() - t
    seeded = time.perf_counter() - started
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # VACUUM too: what autovacuum (off on the test server) does to freshly loaded tables soon after; without
        # the visibility map every index-only scan of the reads under test fetches the heap pages as well
        conn.exec_driver_sql("VACUUM (ANALYZE)")
    engine.dispose()
    print(f"seeded {args.judgments:,} judgments in {seeded:.1f} s (" + ", ".join(f"{k} {v:.1f} s" for k, v in steps.items())
          + ")", flush=True)  # fmt: skip


BULK_TABLES = ("prompt", "completion", "comparison", "judgment", "battle_tally")
"""Tables the seed fills with millions of rows: their secondary indexes and constraints wait until they are full."""
PROMPT_NO_MESSAGES = "'p' || g, '[]'"
PROMPT_MESSAGES = "'p' || g, jsonb_build_array(jsonb_build_object('role', 'user', 'content', 'Question ' || g || '?'))"


@contextlib.contextmanager
def bulk_load(conn: sa.Connection, tables: tuple[str, ...], steps: dict):
    """Load `tables` as pg_restore does: their foreign keys, unique constraints and secondary indexes are dropped
    (primary keys stay), the rows go in, then each is recreated from its own definition (pg_get_constraintdef,
    pg_get_indexdef: the same names and definitions, so the schema ends up as the migrations left it; checked by
    tests/bench/test_scale_seed.py). One transaction: a failure leaves the schema as it was. Checking each row
    against a foreign key and updating half a dozen indexes a row is most of a 10M-row INSERT's time; a CREATE INDEX
    after sorts once."""
    names = [f'"{t}"' if t == "user" else t for t in tables]
    constraints = conn.execute(sa.text(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), contype, conindid FROM pg_constraint "
        "WHERE conrelid::regclass::text = ANY(:t) AND contype IN ('f', 'u') ORDER BY conname"), {"t": names}).all()
    owned = [row[4] for row in constraints if row[3] == "u"]  # a unique constraint's index goes with it
    indexes = conn.execute(sa.text(
        "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid::regclass::text "
        "= ANY(:t) AND NOT indisprimary AND NOT (indexrelid = ANY(:owned)) ORDER BY 1"),
        {"t": names, "owned": owned}).all()  # fmt: skip
    foreign = [c for c in constraints if c[3] == "f"]
    unique = [c for c in constraints if c[3] == "u"]
    for table, name, *_ in foreign + unique:  # foreign keys first: one may rest on a unique constraint
        conn.exec_driver_sql(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for name, _ in indexes:
        conn.exec_driver_sql(f"DROP INDEX {name}")
    yield
    t = time.perf_counter()
    for _, definition in indexes:
        conn.exec_driver_sql(definition)
    for table, name, definition, *_ in unique + foreign:
        conn.exec_driver_sql(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    steps["indexes and constraints"] = time.perf_counter() - t


def timed(url: str, call) -> tuple[float, float]:
    """(cold, warm): the first call on a new engine, then the median of 5 more."""
    from sqlalchemy.orm import Session

    from app.models import Project

    engine = sa.create_engine(url)
    times = []
    for _ in range(6):
        with Session(engine) as db:
            project = db.get(Project, 1)
            started = time.perf_counter()
            call(db, project)
            times.append(time.perf_counter() - started)
    engine.dispose()
    return times[0], statistics.median(times[1:])


def figures(url: str) -> dict:
    from sqlalchemy.orm import Session

    from app.models import Project
    from app.quality import figures as cached
    from app.quality.service import leaderboard

    out = {}
    engine = sa.create_engine(url)
    with Session(engine) as db:
        started = time.perf_counter()
        cached.refresh(db, db.get(Project, 1))
        db.commit()
        out["worker: recompute stats + dashboard + leaderboard rows"] = time.perf_counter() - started
    engine.dispose()
    for name in ("stats", "dashboard"):
        cold, warm = timed(url, lambda db, project, name=name: cached.figures(db, project, name))
        out[f"{'statistics endpoint' if name == 'stats' else 'dashboard'} cold"] = cold
        out[f"{'statistics endpoint' if name == 'stats' else 'dashboard'} warm"] = warm
    cold, warm = timed(url, lambda db, project: cached.leaderboard(db, project))
    out["leaderboard cold"], out["leaderboard warm"] = cold, warm
    engine = sa.create_engine(url)
    with Session(engine) as db:
        started = time.perf_counter()
        board = leaderboard(db, db.get(Project, 1))
        out["leaderboard with style control (every battle, once)"] = time.perf_counter() - started
    engine.dispose()
    print("leaderboard: " + ", ".join(f"{m['name']} {m['rating']:.0f}" for m in board["models"]), flush=True)
    return out


def weights_cached(url: str) -> bool:
    """Whether an export now takes its rater weights from the worker's cached statistics (current for the judgments,
    app.datasets.service.rater_weights) rather than fitting them (a range of comparisons at a time)."""
    from sqlalchemy.orm import Session

    from app.models.tally import ProjectFigures
    from app.quality import figures as cached

    engine = sa.create_engine(url)
    with Session(engine) as db:
        row = db.get(ProjectFigures, (1, "stats"))
        fresh = cached.is_large(db, 1) and row is not None and row.marker == cached.change_marker(db, 1)
    engine.dispose()
    return fresh


def export(url: str, fmt: str = "jsonl") -> dict:
    with tempfile.TemporaryDirectory(prefix="rankforge-bench-scale-") as data_dir:
        out, tree = export_bench.run_measured([sys.executable, str(ROOT / "bench" / "export.py"), "--child", url,
                                               "1", data_dir, fmt])  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"export failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1]) | tree


def rating_loop(url: str, args: argparse.Namespace) -> dict:
    """Judgments per second of `args.raters` raters on a fresh queue (a new project) in this database, and the CPU
    each judgment cost the web processes and the database's backends (bench/assign.py's CpuMeter: less sensitive to
    the machine's other load than the rate). Runs again on a kept database: the raters are reused."""
    engine = sa.create_engine(url)
    loop_args = assign.Args(request_timeout=60.0)
    raters = loop_raters(engine, args.raters)
    project_id = assign.seed_project(engine, f"loop-{uuid.uuid4().hex[:6]}", 20_000, 3)
    warmup = assign.seed_project(engine, f"warm-{uuid.uuid4().hex[:6]}", 200, 3, analyze=False)
    database = url.rsplit("/", 1)[1]
    with tempfile.TemporaryDirectory() as data_dir:
        process, server = assign.start_server(url, args.web, data_dir, loop_args.launch)
        try:
            assign.thread_loop(server, warmup, raters[:10], 3.0, loop_args)
            started = time.time()
            with assign.CpuMeter(process.pid, PG_URL, database) as meter:
                calls, elapsed = assign.thread_loop(server, project_id, raters, args.loop_seconds, loop_args)
        finally:
            assign.stop_server(process)
    if calls.errors:
        print(f"rating loop errors ({len(calls.errors)}): {calls.errors[:3]}", flush=True)
    held = horizon_holders(database, started)
    if held:
        print(f"  note: {held} held this database's xmin horizon during the run (the queue's dead index entries "
              "could not be skipped: claims walk them)", flush=True)  # fmt: skip
    judgments = assign.judgments_in(engine, project_id)
    engine.dispose()
    cpu = meter.seconds()
    return {"rate": judgments / elapsed, "app_ms": 1000 * cpu["app"] / max(judgments, 1),
            "db_ms": 1000 * cpu["db"] / max(judgments, 1), "load": os.getloadavg()[0]}  # fmt: skip


def horizon_holders(database: str, since: float) -> str:
    """Other sessions on the database whose open transaction (or snapshot) began before `since` (an export
    streaming, the worker's figures, an idle transaction): while one is open, no row version the rating loop
    replaces can be cleaned up, and each claim walks the dead entries of the comparisons filled so far."""
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT pid, state, round(extract(epoch FROM now() - xact_start)), left(query, 60) FROM pg_stat_activity "
            "WHERE datname = :d AND backend_xmin IS NOT NULL AND xact_start < to_timestamp(:since)"),
            {"d": database, "since": since}).all()  # fmt: skip
    admin.dispose()
    return "; ".join(f"pid {pid} ({state}, transaction open {age:.0f} s: {query!r})" for pid, state, age, query in rows)


LOOP_RATER = "loop-rater-"
"""The rating loop's raters are `loop-rater-1` ... (bench/stats.py's seeded raters are `rater<n>`)."""


def loop_raters(engine: sa.Engine, n: int) -> list[dict]:
    """Auth headers of `n` annotators `loop-rater-1..n`: those missing are created (a kept database keeps the
    others from an earlier run), each gets a new API token. Each run rates a new project, so a reused rater starts
    with no assignment in it."""
    from app.auth.service import new_token, sha256_hex

    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO \"user\" (username, password_hash, role, is_active, created_at) "
            "SELECT :prefix || g, 'x', 'annotator', true, now() FROM generate_series(1, :n) g "
            "WHERE NOT EXISTS (SELECT 1 FROM \"user\" u WHERE u.username = :prefix || g)"),
            {"prefix": LOOP_RATER, "n": n})  # fmt: skip
        ids = conn.execute(sa.text("SELECT id FROM \"user\" WHERE username = ANY(:names) ORDER BY id"),
                           {"names": [f"{LOOP_RATER}{i}" for i in range(1, n + 1)]}).scalars().all()  # fmt: skip
        tokens = {user_id: new_token("rf_") for user_id in ids}
        conn.execute(sa.text("INSERT INTO api_token (user_id, name, token_hash, prefix, created_at) "
                             "VALUES (:user_id, 'bench-loop', :token_hash, :prefix, now())"),
                     [{"user_id": u, "token_hash": sha256_hex(t), "prefix": t[:7]} for u, t in tokens.items()])  # fmt: skip
    return [{"Authorization": f"Bearer {token}"} for token in tokens.values()]


def loop_rounds(url: str, empty_url: str, args: argparse.Namespace) -> dict[str, list[dict]]:
    """`--loop-rounds` runs on each database, alternating (full, empty, empty, full, full, ...: neither always goes
    first), each round printed as it ends."""
    runs: dict[str, list[dict]] = {"full": [], "empty": []}
    for i in range(args.loop_rounds):
        for label in ("full", "empty") if i % 2 == 0 else ("empty", "full"):
            run = rating_loop(url if label == "full" else empty_url, args)
            runs[label].append(run)
            print(f"rating loop round {i + 1} {label}: {run['rate']:.1f} judgments/s, CPU per judgment: web "
                  f"{run['app_ms']:.2f} ms, database {run['db_ms']:.2f} ms (load {run['load']:.2f})", flush=True)  # fmt: skip
    return runs


def main() -> None:
    args = parse_args()
    name = args.keep_db or f"rankforge_bench_scale_{uuid.uuid4().hex[:8]}"
    url, existed = create_database(name)
    empty_url = None
    try:
        if not existed:
            upgrade(url)
            seed(url, args)
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            n = conn.execute(sa.text("SELECT count(*) FROM judgment")).scalar()
        engine.dispose()
        print(f"{n:,} judgments in database {name}", flush=True)
        results = figures(url) if "figures" in args.sections else {}
        if "export" in args.sections:
            weights = ("the worker's cached statistics" if weights_cached(url) else
                       "fitted in the export (no current cached statistics: run the figures section first)")
            load = os.getloadavg()[0]
            results_export = export(url, args.export_format)
            results_export["load"] = f"{load:.2f} -> {os.getloadavg()[0]:.2f}"
            e = results_export
            print(f"export of every pair ({args.export_format}): {e['rows']:,} pairs in {e['seconds']} s = "
                  f"{e['rows'] / max(e['seconds'], 1e-9):,.0f} rows/s (CPU {e['cpu_seconds']} s, its children "
                  f"{e['children_cpu_seconds']} s), {e['processes']} processes, peak memory of them together "
                  f"{e['tree_peak_rss_mb']} MB resident, {e['tree_peak_pss_mb']} MB proportional (sampled every "
                  f"{export_bench.SAMPLE_SECONDS} s; the kernel's peaks: "
                  f"{e['peak_rss_mb']} MB, the exporting process {e['own_peak_rss_mb']} MB and each child at the "
                  "largest child's, which counts the exporting process's memory when it was spawned) "
                  f"(load {e['load']}; rater weights: {weights})", flush=True)  # fmt: skip
        if "loop" in args.sections:
            empty_url, _ = create_database(f"rankforge_bench_scale_empty_{uuid.uuid4().hex[:8]}")
            upgrade(empty_url)
            runs = loop_rounds(url, empty_url, args)
        for key, seconds in results.items():
            print(f"time/{key}: {seconds:.3f} s")
        if "loop" in args.sections:
            full, empty = (statistics.median(run["rate"] for run in runs[k]) for k in ("full", "empty"))
            cpu = {k: (statistics.median(run["app_ms"] for run in runs[k]),
                       statistics.median(run["db_ms"] for run in runs[k])) for k in ("full", "empty")}  # fmt: skip
            print(f"rating loop, {args.raters} raters, {args.web} web processes, median of {args.loop_rounds} "
                  f"alternating runs of {args.loop_seconds:g} s: {full:.1f} judgments/s with {n:,} judgments loaded, "
                  f"{empty:.1f} judgments/s on an empty database ({100 * (full / empty - 1):+.1f}%); CPU per judgment "
                  f"web/database {cpu['full'][0]:.2f}/{cpu['full'][1]:.2f} ms loaded, "
                  f"{cpu['empty'][0]:.2f}/{cpu['empty'][1]:.2f} ms empty")  # fmt: skip
        print(f"machine load: {os.popen('uptime').read().strip()}")
    finally:
        admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            if not args.keep_db:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if empty_url:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{empty_url.rsplit("/", 1)[1]}" WITH (FORCE)')
        admin.dispose()


if __name__ == "__main__":
    main()
