"""The claim's plan does not depend on statistics (PostgreSQL).

A bulk load that nothing ANALYZEs (autovacuum off, or not yet run) leaves the planner expecting one or two
open comparisons in a project it has no statistics for; it then prefers reading every open comparison and
sorting them over walking `ix_comparison_queue` in claim order, a plan whose cost grows with the queue. The
test loads a queue that way, claims a few hundred times, and EXPLAINs the claim's own candidate statement,
replayed after the statements that ran before it in the same claim transaction (as the planner saw it then):
the plan must stay an ordered index walk, with no Sort. Plan shape only, never time.
"""

from __future__ import annotations

import random

import pytest
import sqlalchemy as sa

from app.db import get_engine, session_scope
from app.judgments import service as judgments
from app.judgments.schemas import JudgmentIn
from app.models import Comparison, Completion, Project, Prompt, User
from app.tasks import service

QUEUE = 3000
CLAIMS = 300
PROJECT_ID = 700_001
"""An id no statistics gathered by earlier tests on this database can know."""


def bulk_load_queue(engine: sa.Engine, project_id: int, n: int, overlap: int) -> None:
    """Prompts, two completions each, one comparison each, inserted in bulk (Core executemany, so the models'
    defaults fill the other columns), and no ANALYZE."""
    with engine.begin() as conn:
        prompt_ids = conn.execute(
            sa.insert(Prompt).returning(Prompt.id, sort_by_parameter_order=True),
            [{"project_id": project_id, "external_id": f"q{i}", "messages": [{"role": "user", "content": f"Q {i}"}],
              "is_chat": False} for i in range(n)],
        ).scalars().all()  # fmt: skip
        completion_ids = conn.execute(
            sa.insert(Completion).returning(Completion.id, sort_by_parameter_order=True),
            [{"prompt_id": p, "text": f"Answer {j} to {p}", "model_name": f"model-{j}"}
             for p in prompt_ids for j in range(2)],
        ).scalars().all()  # fmt: skip
        conn.execute(sa.insert(Comparison), [
            {"project_id": project_id, "prompt_id": p, "completion_ids": completion_ids[2 * i: 2 * i + 2],
             "required": overlap} for i, p in enumerate(prompt_ids)
        ])  # fmt: skip


def plan_lines(engine: sa.Engine, transaction: list[tuple[str, object]]) -> list[str]:
    """EXPLAIN of the candidate statement of one recorded claim transaction, after replaying what ran before it
    in that transaction (the rater's lock and the settings it takes), all rolled back."""
    position = next(i for i, (sql, _) in enumerate(transaction) if "SKIP LOCKED" in sql)
    with engine.connect() as conn, conn.begin() as outer:
        for sql, parameters in transaction[:position]:
            conn.exec_driver_sql(sql, parameters)
        sql, parameters = transaction[position]
        lines = list(conn.exec_driver_sql("EXPLAIN " + sql, parameters).scalars())
        outer.rollback()
    return lines


@pytest.mark.only_db("postgresql")
def test_claim_plan_stays_an_index_walk_on_a_queue_nothing_analyzed(db_url, users):
    engine = get_engine(db_url)
    with engine.begin() as conn:
        for table in ("comparison", "assignment", "prompt", "completion"):
            conn.exec_driver_sql(f'ALTER TABLE "{table}" SET (autovacuum_enabled = false)')
    try:
        raters = [users.create(f"rater{i}", "annotator")["id"] for i in range(10)]
        with session_scope(db_url) as db:
            db.add(Project(id=PROJECT_ID, slug="bulk", name="Bulk", mode="pairwise", overlap=3, max_overlap=3))
        bulk_load_queue(engine, PROJECT_ID, QUEUE, overlap=3)

        recorded: list[tuple[str, object]] = []

        def record(conn, cursor, statement, parameters, context, executemany):
            recorded.append((statement, parameters))

        plans = []
        rng = random.Random(7)
        for i in range(CLAIMS):
            rater_id = raters[i % len(raters)]
            watch = i % 100 == 99
            if watch:
                recorded.clear()
                sa.event.listen(engine, "before_cursor_execute", record)
            try:
                with session_scope(db_url) as db:
                    assignment = service.claim_next(db, db.get(Project, PROJECT_ID), db.get(User, rater_id))
                    assert assignment is not None
                    assignment_id, order = assignment.id, list(assignment.display_order)
            finally:
                if watch:
                    sa.event.remove(engine, "before_cursor_execute", record)
            if watch:
                plans.append(plan_lines(engine, list(recorded)))
            with session_scope(db_url) as db:
                rng.shuffle(order)
                judgments.submit(db, assignment_id, db.get(User, rater_id), JudgmentIn(ranking=[[c] for c in order]))

        with engine.connect() as conn:
            analyzed = conn.execute(sa.text(
                "SELECT count(*) FROM pg_stats WHERE tablename = 'comparison' AND attname = 'project_id' "
                "AND most_common_vals::text LIKE :pattern"
            ), {"pattern": f"%{PROJECT_ID}%"}).scalar()  # fmt: skip
        assert analyzed == 0, "the queue's project must be unknown to the statistics for this test to mean anything"
        assert len(plans) == CLAIMS // 100
        for plan in plans:
            text = "\n".join(plan)
            assert "Index Scan using ix_comparison_queue on comparison" in text, text
            assert not any(line.strip().startswith(("Sort", "->  Sort", "Incremental Sort")) for line in plan), text
    finally:
        with engine.begin() as conn:
            for table in ("comparison", "assignment", "prompt", "completion"):
                conn.exec_driver_sql(f'ALTER TABLE "{table}" RESET (autovacuum_enabled)')


@pytest.mark.only_db("postgresql")
def test_a_bulk_import_refreshes_the_statistics_of_what_it_filled(db_url):
    from app.imports.service import ANALYZE_AFTER_ROWS, import_file
    from tests.helpers import native_lines

    project_id = PROJECT_ID + 1
    with session_scope(db_url) as db:
        db.add(Project(id=project_id, slug="imported", name="Imported", mode="pairwise", overlap=3, max_overlap=3))
    with session_scope(db_url) as db:
        import_file(db, db.get(Project, project_id), native_lines(ANALYZE_AFTER_ROWS), "native", None)
    with get_engine(db_url).connect() as conn:
        known = conn.execute(sa.text(
            "SELECT count(*) FROM pg_stats WHERE tablename = 'comparison' AND attname = 'project_id' "
            "AND most_common_vals::text LIKE :pattern"
        ), {"pattern": f"%{project_id}%"}).scalar()  # fmt: skip
    assert known == 1
