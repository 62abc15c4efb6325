"""Benchmark of dataset export: 1,000,000 preference pairs out of PostgreSQL, to JSONL and to Parquet.

It creates a database of its own, runs the migrations and bulk-seeds it with INSERT ... SELECT over
generate_series: `--comparisons` comparisons of 3 completions each, every one ranked fully by each of 3
raters (3 pairs per comparison, so 333,334 comparisons give 1,000,002 pairs from 1,000,002 judgments),
judgment dates spread over 30 days. Then each export runs `build_snapshot` in a child process of its own,
and its memory is measured two ways: the kernel's peaks (`ru_maxrss` of that process, plus, for a parallel
export's children, the largest child's counted once each: an upper bound that also counts, in each child, the
exporting process's memory at the moment it was spawned, because Linux carries a process's resident peak across
fork and exec), and, sampled every 0.1 s from /proc (`run_measured`), the largest sums over that process and its
descendants of their resident sizes (`tree_peak_rss_mb`: shared library pages counted in each) and of their
proportional sizes (`tree_peak_pss_mb`: shared pages split between the processes): what the export holds at once.

- jsonl: rows streamed from the database into train/test JSONL
- parquet: the same rows, then Parquet built from them (the JSONL is scratch and removed)
- both: what a real snapshot writes (JSONL and Parquet)

Prints one JSON line per export {format, seconds, cpu_seconds (this process's: the part a loaded machine
does not inflate much), peak_rss_mb, rows, bytes} and drops the database.

    .venv/bin/python bench/export.py [--comparisons 333334] [--formats jsonl,parquet,both] [--keep-db]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from bench import assign  # noqa: E402

PG_ADMIN_URL = os.environ.get("RANKFORGE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
RATERS = 3
COMPLETIONS = 3
FORMATS = {"jsonl": ("jsonl",), "parquet": ("parquet",), "both": ("jsonl", "parquet")}


@dataclass
class Args:
    comparisons: int = 333_334
    """Comparisons to seed; pairs = 3 x comparisons (3 completions ranked fully, raters agree)."""
    formats: str = "jsonl,parquet,both"
    """Which exports to time, comma-separated: jsonl, parquet, both."""
    keep_db: bool = False
    """Leave the database in place (its URL is printed) instead of dropping it."""


SEED_SQL = [
    """INSERT INTO "user" (id, username, password_hash, role, is_active, created_at)
       SELECT r, 'rater' || r, 'x', 'annotator', true, now() FROM generate_series(1, {raters}) r""",
    """INSERT INTO prompt (id, project_id, external_id, messages, is_chat, metadata, priority, created_at)
       SELECT g, {project}, 'q' || g,
              jsonb_build_array(jsonb_build_object('role', 'user', 'content',
                  'Question number ' || g || ': explain how tides work, briefly and correctly?')),
              false, '{{}}', 0, now()
       FROM generate_series(1, {n}) g""",
    """INSERT INTO completion (id, prompt_id, text, model_name, params, metadata, created_at)
       SELECT {k} * (g - 1) + k + 1, g,
              'Answer ' || k || ' to question ' || g || '. ' || repeat('The moon pulls the oceans. ', 3 + k),
              'model-' || k, '{{}}', '{{}}', now()
       FROM generate_series(1, {n}) g, generate_series(0, {k} - 1) k""",
    """INSERT INTO comparison (id, project_id, prompt_id, completion_ids, is_gold, required, n_judgments,
                              n_leases, priority, score_gap, metadata, created_at)
       SELECT g, {project}, g, jsonb_build_array({k} * (g - 1) + 1, {k} * (g - 1) + 2, {k} * (g - 1) + 3),
              false, {raters}, {raters}, 0, 0, 1e9, '{{}}', now()
       FROM generate_series(1, {n}) g""",
    """INSERT INTO judgment (id, comparison_id, project_id, rater_id, ranking, attributes, flags, source,
                            guideline_version, top_completion_id, chosen_position, created_at)
       SELECT {raters} * (g - 1) + r, g, {project}, r,
              jsonb_build_array(jsonb_build_array({k} * (g - 1) + 1), jsonb_build_array({k} * (g - 1) + 2),
                                jsonb_build_array({k} * (g - 1) + 3)),
              '{{}}', '[]', 'human', 1, {k} * (g - 1) + 1, mod(g + r, {k}), now() - make_interval(days => mod(g, 30))
       FROM generate_series(1, {n}) g, generate_series(1, {raters}) r""",
]
SEQUENCES = ["user", "prompt", "completion", "comparison", "judgment"]


def create_database() -> str:
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"rankforge_bench_export_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def drop_database(url: str) -> None:
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    admin.dispose()


def seed(url: str, n: int) -> int:
    from app.db import session_scope
    from app.migrate import upgrade
    from app.projects.schemas import ProjectCreate
    from app.projects.service import create_project

    upgrade(url)
    with session_scope(url) as db:
        project_id = create_project(db, ProjectCreate(name="Export bench", mode="rank", overlap=RATERS), None).id
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in SEED_SQL:
            statement = statement.format(n=n, k=COMPLETIONS, raters=RATERS, project=project_id)
            conn.exec_driver_sql(assign.complete_insert(engine, statement))  # columns later migrations added
        for table in SEQUENCES:
            conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('\"{table}\"', 'id'), "
                                 f'(SELECT max(id) FROM "{table}"))')  # fmt: skip
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE")  # fresh planner statistics, as autovacuum would leave them (not rolled back)
    engine.dispose()
    return project_id


def child(url: str, project_id: int, data_dir: str, fmt: str) -> None:
    """Runs in its own process: one export, then a JSON line with its time and peak memory."""
    os.environ["RANKFORGE_DATABASE_URL"], os.environ["RANKFORGE_DATA_DIR"] = url, data_dir
    from app.datasets.export_parts import export_processes
    from app.datasets.service import build_snapshot, request_snapshot
    from app.db import session_scope
    from app.models import DatasetSnapshot, Project

    with session_scope(url) as db:
        snapshot_id = request_snapshot(db, db.get(Project, project_id), {"format": "pairs"}, None).id
    started, cpu = time.perf_counter(), time.process_time()
    with session_scope(url) as db:
        snapshot = db.get(DatasetSnapshot, snapshot_id)
        result = build_snapshot(db, snapshot, formats=FORMATS[fmt])
        size = snapshot.size_bytes
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    own_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes
    # A parallel export's children (app.datasets.export_parts): the kernel keeps the largest one's peak; counted
    # once for each of them, as if all peaked at once (an upper bound: they share the interpreter's pages too).
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    parts = max(0, min(export_processes(), 64) - 1) if children.ru_maxrss else 0
    peak_mb = own_mb + parts * children.ru_maxrss / 1024
    print(json.dumps({"format": fmt, "seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1),
                      "children_cpu_seconds": round(children.ru_utime + children.ru_stime, 1),
                      "peak_rss_mb": round(peak_mb), "processes": 1 + parts, "own_peak_rss_mb": round(own_mb),
                      "rows": result["rows"]["train"] + result["rows"]["test"], "bytes": size}))  # fmt: skip


SAMPLE_SECONDS = 0.1


def _tree_memory(root: int) -> tuple[int, int]:
    """(resident bytes, proportional bytes) of `root` and its descendants now (/proc: Linux). Resident: each process's
    VmRSS summed, so pages two processes share (the interpreter's and numpy's libraries) count in each: an upper
    bound. Proportional (PSS, smaps_rollup): a shared page split between its sharers, what they hold together."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as stat:
                    parents[int(entry.name)] = int(stat.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue  # it ended meanwhile
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    resident = proportional = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/statm", "rb") as statm:
                resident += int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            with open(f"/proc/{pid}/smaps_rollup", "rb") as rollup:
                proportional += next(int(line.split()[1]) * 1024 for line in rollup if line.startswith(b"Pss:"))
        except (OSError, ValueError, IndexError, StopIteration):
            continue
    return resident, proportional


def run_measured(command: list[str]) -> tuple[subprocess.CompletedProcess, dict[str, float]]:
    """Run `command` (its output captured) and sample the memory of it and its descendants together every
    SAMPLE_SECONDS: (the finished process, {"tree_peak_rss_mb", "tree_peak_pss_mb"}: the largest sums, `_tree_memory`)."""
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks = [0, 0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(SAMPLE_SECONDS):
            for i, value in enumerate(_tree_memory(process.pid)):
                peaks[i] = max(peaks[i], value)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    done.set()
    sampler.join()
    finished = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    return finished, {"tree_peak_rss_mb": round(peaks[0] / 2**20), "tree_peak_pss_mb": round(peaks[1] / 2**20)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comparisons", type=int, default=Args.comparisons)
    parser.add_argument("--formats", default=Args.formats)
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--child", nargs=4, metavar=("URL", "PROJECT", "DATA_DIR", "FORMAT"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        url, project, data_dir, fmt = options.child
        child(url, int(project), data_dir, fmt)
        return
    args = Args(comparisons=options.comparisons, formats=options.formats, keep_db=options.keep_db)
    url = create_database()
    try:
        started = time.perf_counter()
        project_id = seed(url, args.comparisons)
        print(json.dumps({"seeded": {"comparisons": args.comparisons, "judgments": args.comparisons * RATERS,
                                     "expected_pairs": args.comparisons * COMPLETIONS},
                          "seconds": round(time.perf_counter() - started, 1)}), flush=True)  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="rankforge-bench-export-") as data_dir:
            for fmt in args.formats.split(","):
                out, tree = run_measured([sys.executable, __file__, "--child", url, str(project_id), data_dir, fmt])
                if out.returncode != 0:
                    raise SystemExit(f"export {fmt} failed:\n{out.stderr[-3000:]}")
                result = json.loads(out.stdout.strip().splitlines()[-1]) | tree
                print(json.dumps(result), flush=True)
    finally:
        if args.keep_db:
            print(json.dumps({"database": url}))
        else:
            drop_database(url)


if __name__ == "__main__":
    main()
