"""The migrations build exactly the schema the ORM models describe, on SQLite and PostgreSQL, and the CLI runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from app.migrate import alembic_config, upgrade
from app.models import Base
from tests.conftest import ROOT, _pg_create_database, _pg_drop_database


def _expression_indexes() -> dict[str, sa.Index]:
    return {index.name: index for table in Base.metadata.tables.values() for index in table.indexes
            if any(not isinstance(e, sa.Column) for e in index.expressions)}  # fmt: skip


def _sqlite_index_matches(connection, index: sa.Index) -> bool:
    """SQLite reflection cannot read expression indexes ("priority DESC", partial WHERE), so alembic always
    reports them as changed there; compare the stored CREATE INDEX statement with the model's instead."""
    stored = connection.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?",
                                        (index.name,)).scalar()  # fmt: skip
    if stored is None:
        return False
    expected = str(sa.schema.CreateIndex(index).compile(dialect=connection.dialect))
    normalize = lambda sql: " ".join(sql.replace('"', "").split()).lower()  # noqa: E731
    return normalize(stored) == normalize(expected)


def schema_differences(url: str) -> list:
    """What `alembic revision --autogenerate` would write for this database (same options as env.py)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True,
                                                                   "target_metadata": Base.metadata})  # fmt: skip
            differences = compare_metadata(context, Base.metadata)
            if connection.dialect.name == "sqlite":
                expression_indexes = _expression_indexes()
                verified = {name for name, index in expression_indexes.items()
                            if _sqlite_index_matches(connection, index)}  # fmt: skip
                differences = [d for d in differences
                               if not (d[0] in ("add_index", "remove_index") and d[1].name in verified)]  # fmt: skip
            return differences
    finally:
        engine.dispose()


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(url: str) -> str | None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def test_models_and_migrations_agree(database_url):
    assert current_revision(database_url) == head_revision()
    differences = schema_differences(database_url)
    assert differences == [], "the models differ from the migrations; write a migration:\n" + "\n".join(
        map(repr, differences)
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    url = _pg_create_database()
    yield url
    _pg_drop_database(url)


def test_downgrade_to_base_and_upgrade_again(fresh_url):
    upgrade(fresh_url)
    from alembic import command

    command.downgrade(alembic_config(fresh_url), "base")
    engine = sa.create_engine(fresh_url)
    try:
        assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    upgrade(fresh_url)
    assert schema_differences(fresh_url) == []


def rankforge_command() -> list[str]:
    script = Path(sys.executable).parent / "rankforge"
    return [str(script)] if script.exists() else [sys.executable, "-m", "app.cli"]


def test_cli_db_upgrade_creates_a_new_sqlite_database(tmp_path):
    database = tmp_path / "nested" / "dir" / "new.db"
    url = f"sqlite:///{database}"
    env = os.environ | {"RANKFORGE_DATABASE_URL": url, "RANKFORGE_DATA_DIR": str(tmp_path / "data")}
    for _ in range(2):  # the second run finds nothing to do
        result = subprocess.run([*rankforge_command(), "db", "upgrade"], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=120)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "up to date" in result.stdout
    assert database.exists()
    assert current_revision(url) == head_revision()
    engine = sa.create_engine(url)
    try:
        tables = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert set(Base.metadata.tables) <= tables
    assert schema_differences(url) == []


def test_the_continuation_index_is_on_the_continuation_key():
    """The partial index behind has_multi_message_chats names the metadata key continuations are stored under, and
    the migration creates the model's predicate."""
    import importlib.util

    from app.imports.messages import CONTINUATION_KEY
    from app.models.comparison import CONTINUES_SQL

    path = next((Path(__file__).parents[1] / "migrations" / "versions").glob("*_0021_chat_and_continuation_indexes.py"))
    spec = importlib.util.spec_from_file_location("revision_0021", path)
    revision = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(revision)
    assert revision.CONTINUES == CONTINUES_SQL
    assert all(f"'{CONTINUATION_KEY}'" in sql or f"$.{CONTINUATION_KEY}'" in sql for sql in CONTINUES_SQL.values())
