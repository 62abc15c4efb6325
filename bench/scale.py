"""Benchmark of the figures at scale (issue 25, ten million judgments), on PostgreSQL.

Creates a database of its own, runs the migrations and seeds `--judgments` human pairwise judgments with
bench/stats.py's INSERT ... SELECT over generate_series (raters, prompts, two completions from `--models` models,
comparisons, `--overlap` judgments each), then builds the battle tallies (app.judgments.tallies.rebuild: the
seed bypasses the ORM, as the migration's backfill would for existing data) and prints:

- worker: the idle task's computation of the cached figures (app.quality.figures.refresh: project_stats,
  dashboard and the leaderboard's every-battle parts), what a request of a large project no longer does;
- statistics endpoint, dashboard: `app.quality.figures.figures` as the API routes call it (the cached row; a
  project at or under SYNC_MAX_JUDGMENTS is computed per request instead), cold (a new engine and connection)
  and warm (median of 5 calls);
- leaderboard: `app.quality.figures.leaderboard` as the API calls it (ratings fitted on the tallies with 1000
  bootstrap replicates, the rest cached), cold and warm; and, once, the leaderboard computed from every battle
  (what the worker does for it, and what a request did before);
- export of every pair (`build_snapshot`, JSONL; `--export-format parquet|both`) in a child process: pairs, time,
  rows/s and its peak RSS (bench/export.py's child), the load average around it, and where its rater weights came
  from (the worker's cached statistics when current, which the figures section has just refreshed; else fitted
  in the export over every judgment, memory growing with them);
- the rating loop: judgments/s with `--raters` raters (one thread and HTTP client each, bench/assign.py's thread
  loop) against `--web` uvicorn processes, on a fresh queue in this database and in an empty database.

Service functions are timed in-process (no HTTP, no auth): the endpoints add their JSON encoding on top.

    .venv/bin/python bench/scale.py [--judgments 10000000] [--overlap 4] [--raters 50] [--web 2] [--keep-db NAME]
    .venv/bin/python bench/scale.py --judgments 100000 --loop-seconds 10      # a quick check
    .venv/bin/python bench/scale.py --judgments 10000000 --overlap 1 --keep-db rf_10m --sections figures,export
                                                                              # the issue's export of 10M pairs

A pairs export has one row per judged comparison (its votes aggregated): with `--overlap 4` that is judgments / 4
pairs; `--overlap 1` makes every judgment its own pair (10M pairs from 10M judgments).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
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
    parser.add_argument("--keep-db", default="", help="seed under this name when missing, reuse it when present")
    parser.add_argument("--sections", default="figures,export,loop",
                        help="what to time, comma-separated: figures, export, loop (e.g. --sections export)")
    parser.add_argument("--export-format", default="jsonl", choices=("jsonl", "parquet", "both"),
                        help="the export's files: JSONL alone (the streamed rows), Parquet, or both (a snapshot)")
    args = parser.parse_args()
    args.sections = set(args.sections.split(","))
    unknown = args.sections - {"figures", "export", "loop"}
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
    with engine.begin() as conn:
        for statement in SEED_SQL:
            if statement != "ANALYZE" and not statement.lstrip().startswith("INSERT INTO project "):
                statement = _complete(engine, statement)
                conn.execute(sa.text(statement), params if ":" in statement else {})
        # bench/stats.py's prompts have no messages; an export needs the question
        conn.execute(sa.text("UPDATE prompt SET messages = jsonb_build_array(jsonb_build_object('role', 'user', "
                             "'content', 'Question ' || id || '?'))"))  # fmt: skip
        for table in SEEDED_TABLES:
            conn.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('\"{table}\"', 'id'), "
                                 f"(SELECT max(id) FROM \"{table}\"))"))  # fmt: skip
    seeded = time.perf_counter() - started
    started = time.perf_counter()
    from app.judgments.tallies import rebuild

    with engine.begin() as conn:
        rebuild(conn)
    tallied = time.perf_counter() - started
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()
    print(f"seeded {args.judgments:,} judgments in {seeded:.1f} s; tallies built in {tallied:.1f} s", flush=True)


def _complete(engine: sa.Engine, statement: str) -> str:
    """A SEED_SQL INSERT ... SELECT with the NOT NULL columns later migrations added (bench/assign.py's
    `_other_columns`: their model defaults) appended to its column list and its outer select list."""
    match = re.match(r'\s*INSERT INTO ("?\w+"?) \(([^)]*)\)', statement)
    if match is None:
        return statement
    cols, vals = assign._other_columns(engine, match.group(1).strip('"'), match.group(2))
    if not cols:
        return statement
    head = statement[:match.end() - 1] + cols + ")"
    rest = statement[match.end():]
    select_from = re.search(r"\s+FROM\s", rest)
    return head + rest[:select_from.start()] + vals + rest[select_from.start():]


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
    app.datasets.service.rater_weights) rather than fitting them over every judgment (memory grows with them)."""
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
        out = subprocess.run([sys.executable, str(ROOT / "bench" / "export.py"), "--child", url, "1", data_dir,
                              fmt], cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"export failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def rating_loop(url: str, args: argparse.Namespace, label: str) -> float:
    """Judgments per second of `args.raters` raters on a fresh queue in this database."""
    engine = sa.create_engine(url)
    loop_args = assign.Args(request_timeout=60.0)
    raters = assign.seed_raters(engine, args.raters) if label == "empty" else _bench_raters(engine, args)
    project_id = assign.seed_project(engine, f"loop-{uuid.uuid4().hex[:6]}", 20_000, 3)
    warmup = assign.seed_project(engine, f"warm-{uuid.uuid4().hex[:6]}", 200, 3)
    with tempfile.TemporaryDirectory() as data_dir:
        process, server = assign.start_server(url, args.web, data_dir, loop_args.launch)
        try:
            assign.thread_loop(server, warmup, raters[:10], 3.0, loop_args)
            _, elapsed = assign.thread_loop(server, project_id, raters, args.loop_seconds, loop_args)
        finally:
            assign.stop_server(process)
    rate = assign.judgments_in(engine, project_id) / elapsed
    engine.dispose()
    return rate


def _bench_raters(engine: sa.Engine, args: argparse.Namespace) -> list[dict]:
    with engine.connect() as conn:
        present = conn.execute(sa.text("SELECT count(*) FROM \"user\" WHERE username LIKE 'bench%'")).scalar()
    if present:
        raise SystemExit("the kept database already has the rating loop's raters; use a fresh --keep-db name")
    return assign.seed_raters(engine, args.raters)


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
                  f"{e['rows'] / max(e['seconds'], 1e-9):,.0f} rows/s (CPU {e['cpu_seconds']} s), peak RSS "
                  f"{e['peak_rss_mb']} MB (load {e['load']}; rater weights: {weights})", flush=True)  # fmt: skip
        if "loop" in args.sections:
            loop_full = rating_loop(url, args, "full")
            empty_url, _ = create_database(f"rankforge_bench_scale_empty_{uuid.uuid4().hex[:8]}")
            upgrade(empty_url)
            loop_empty = rating_loop(empty_url, args, "empty")
        for key, seconds in results.items():
            print(f"time/{key}: {seconds:.3f} s")
        if "loop" in args.sections:
            print(f"rating loop, {args.raters} raters, {args.web} web processes: {loop_full:.1f} judgments/s with "
                  f"{n:,} judgments loaded, {loop_empty:.1f} judgments/s on an empty database "
                  f"({100 * (loop_full / loop_empty - 1):+.1f}%)")  # fmt: skip
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
