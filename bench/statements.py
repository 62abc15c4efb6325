"""SQL statements per request on the rating loop (next task, submit), and EXPLAIN (ANALYZE, BUFFERS) of each.

Builds a PostgreSQL database of its own (the same bulk seed as bench/assign.py), runs the app in-process
(Starlette's TestClient, so no server process to profile) and records every statement the engine sends
during one next-task and one submit, after a few warm-up cycles. With `--explain` each recorded SELECT
(and the claim's statements) is run again under EXPLAIN (ANALYZE, BUFFERS) inside a transaction that is
rolled back. Load-independent: statement counts and plans do not depend on how busy the machine is.

    .venv/bin/python bench/statements.py [--size 2000] [--explain] [--stale]

`--stale`: the queue is loaded after an ANALYZE of the empty tables (as a bulk import leaves it with
autovacuum off), so the plans shown are the ones the planner picks on stale statistics.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import assign  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--stale", action="store_true")
    parser.add_argument("--pg-url", default=assign.Args.pg_url)
    args = parser.parse_args()

    url = assign.create_database(args.pg_url)
    engine = sa.create_engine(url)
    try:
        assign.upgrade(url)
        raters = assign.seed_raters(engine, 5)
        if args.stale:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("ANALYZE")  # statistics of the empty tables
            project_id = assign.seed_project(engine, "statements", args.size, 3, analyze=False)
        else:
            project_id = assign.seed_project(engine, "statements", args.size, 3)
        with tempfile.TemporaryDirectory() as data_dir:
            os.environ["RANKFORGE_DATABASE_URL"] = url
            os.environ["RANKFORGE_DATA_DIR"] = data_dir
            from app.config import get_settings

            get_settings.cache_clear()
            run(url, project_id, raters, args.explain)
    finally:
        engine.dispose()
        from app.db import dispose_engines

        dispose_engines()
        assign.drop_database(args.pg_url, url)


def run(url: str, project_id: int, raters: list[dict], explain: bool) -> None:
    from fastapi.testclient import TestClient

    from app.db import get_engine
    from app.main import create_app

    app_engine = get_engine(url)
    recorded: list[tuple[str, object]] = []

    @sa.event.listens_for(app_engine, "before_cursor_execute")
    def record(conn, cursor, statement, parameters, context, executemany):
        recorded.append((statement, parameters))

    client = TestClient(create_app())
    headers = raters[0]
    for _ in range(5):  # warm caches (statement compilation, connection pool)
        task = client.get(f"/api/v1/projects/{project_id}/tasks/next", headers=headers).json()
        ranking = [[o["id"]] for o in task["options"]]
        client.post(f"/api/v1/assignments/{task['assignment_id']}/judgment", headers=headers,
                    json={"ranking": ranking})  # fmt: skip

    recorded.clear()
    response = client.get(f"/api/v1/projects/{project_id}/tasks/next", headers=headers)
    next_statements = list(recorded)
    task = response.json()
    recorded.clear()
    response = client.post(f"/api/v1/assignments/{task['assignment_id']}/judgment", headers=headers,
                           json={"ranking": [[o["id"]] for o in task["options"]]})  # fmt: skip
    submit_statements = list(recorded)
    assert response.status_code == 201, response.text
    for name, statements in (("next-task", next_statements), ("submit", submit_statements)):
        print(f"\n== {name}: {len(statements)} statements")
        for i, (sql, _params) in enumerate(statements, 1):
            print(f"-- [{i}] {' '.join(sql.split())[:400]}")
    if explain:
        explain_all(app_engine, next_statements + submit_statements)


def explain_all(engine: sa.Engine, statements) -> None:
    print("\n== EXPLAIN (ANALYZE, BUFFERS), each in a rolled-back transaction")
    for sql, params in statements:
        first = sql.lstrip().split(None, 1)[0].upper()
        if first not in ("SELECT", "UPDATE", "INSERT", "DELETE", "WITH"):
            continue
        with engine.connect() as conn, conn.begin() as transaction:
            try:
                rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + sql, params).scalars().all()
            except sa.exc.DBAPIError as error:
                print(f"-- {' '.join(sql.split())[:160]}\n   (not explained: {str(error).splitlines()[0]})")
                continue
            finally:
                if transaction.is_active:
                    transaction.rollback()
        print(f"-- {' '.join(sql.split())[:200]}")
        for row in rows:
            print("   " + row)


if __name__ == "__main__":
    main()
