"""bench/scale.py seeds 10M judgments the way pg_restore loads a dump (`bulk_load`: the big tables' foreign keys,
unique constraints and secondary indexes dropped during the INSERTs, recreated after); the schema must end up exactly
as the migrations made it, so the benchmark measures the real one."""

import pytest
from sqlalchemy import text

CATALOG = [
    "SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid) FROM pg_constraint "
    "WHERE connamespace = 'public'::regnamespace",
    "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid), i.indisunique, i.indisprimary "
    "FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE c.relnamespace = 'public'::regnamespace",
]


def _catalog(conn) -> list:
    return [sorted(conn.execute(text(query)).all()) for query in CATALOG]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # the seed and its catalog are PostgreSQL's
def test_bulk_load_leaves_the_schema_as_the_migrations_made_it(db_url):
    from app.db import get_engine
    from bench.scale import BULK_TABLES, bulk_load

    engine = get_engine(db_url)
    with engine.begin() as conn:
        before = _catalog(conn)
        steps: dict = {}
        with bulk_load(conn, BULK_TABLES, steps):
            during = _catalog(conn)
        after = _catalog(conn)
        conn.rollback()
    constraints, indexes = before
    assert len(during[0]) < len(constraints) and len(during[1]) < len(indexes)  # dropped for the load
    kept = {name for _, name, _, _ in during[0]}
    assert {name for _, name, kind, _ in constraints if kind == "p"} <= kept  # primary keys stay
    assert not any(table in BULK_TABLES and kind in "fu" for table, _, kind, _ in during[0])
    assert after == before
    assert "indexes and constraints" in steps
