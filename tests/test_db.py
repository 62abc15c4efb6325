"""SQLite transactions: a unit of work that reads and then writes must hold the write lock from its start.

A DEFERRED transaction that has read cannot take the write lock once another connection committed after its
read: SQLite answers "database is locked" at once, whatever the busy timeout. The worker commits heartbeats,
progress and scheduler leases every few seconds, so CLI commands and web requests that write use write
sessions (BEGIN IMMEDIATE)."""

import sqlite3

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from starlette.requests import Request

from app.auth.deps import get_db
from app.db import session_scope


@pytest.fixture
def sqlite_url(tmp_path):
    path = tmp_path / "locks.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER)")
        conn.execute("INSERT INTO counter VALUES (1, 0)")
    return f"sqlite:///{path}", path


def _other_writer_commits(path) -> None:
    with sqlite3.connect(path, timeout=0, isolation_level=None) as conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE counter SET n = n + 100")
        conn.execute("COMMIT")


def test_a_deferred_read_then_write_fails_when_another_writer_committed_in_between(sqlite_url):
    url, path = sqlite_url
    with pytest.raises(OperationalError, match="locked"), session_scope(url) as db:
        db.execute(text("SELECT n FROM counter")).scalar()
        _other_writer_commits(path)
        db.execute(text("UPDATE counter SET n = n + 1"))


def test_a_write_session_holds_the_lock_from_its_first_read_and_loses_no_update(sqlite_url):
    url, path = sqlite_url
    with session_scope(url, write=True) as db:
        n = db.execute(text("SELECT n FROM counter")).scalar()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            _other_writer_commits(path)  # refused at once: our transaction holds the write lock
        db.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})
    _other_writer_commits(path)
    with session_scope(url) as db:
        assert db.execute(text("SELECT n FROM counter")).scalar() == 101


@pytest.mark.parametrize(("method", "holds_lock"), [("GET", False), ("POST", True), ("DELETE", True)])
def test_requests_that_may_write_get_write_sessions(sqlite_url, monkeypatch, method, holds_lock):
    url, path = sqlite_url
    monkeypatch.setenv("RANKFORGE_DATABASE_URL", url)
    from app.config import get_settings

    get_settings.cache_clear()
    try:
        dependency = get_db(Request({"type": "http", "method": method, "headers": [], "path": "/"}))
        db = next(dependency)
        db.execute(text("SELECT n FROM counter")).scalar()
        if holds_lock:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                _other_writer_commits(path)
        else:
            _other_writer_commits(path)
        dependency.close()
    finally:
        get_settings.cache_clear()


def test_retry_conflicts_runs_again_after_a_deadlock_and_only_then():
    """A transaction PostgreSQL rolled back for a deadlock (40P01) or a serialization failure (40001) runs again;
    any other database error, and the last conflict, go up unchanged."""
    from types import SimpleNamespace

    import pytest
    from sqlalchemy.exc import DBAPIError

    from app.db import retry_conflicts

    class FakeSession:
        rollbacks = 0

        def rollback(self):
            self.rollbacks += 1

    def failing(codes):
        calls = []

        def action():
            calls.append(1)
            if len(calls) <= len(codes):
                raise DBAPIError("stmt", {}, SimpleNamespace(sqlstate=codes[len(calls) - 1]))
            return "done"

        return action, calls

    session = FakeSession()
    action, calls = failing(["40P01", "40001"])
    assert retry_conflicts(session, action) == "done" and len(calls) == 3 and session.rollbacks == 2
    action, calls = failing(["23505"])  # a unique violation is not a conflict to retry
    with pytest.raises(DBAPIError):
        retry_conflicts(FakeSession(), action)
    assert len(calls) == 1
    action, calls = failing(["40P01"] * 3)
    with pytest.raises(DBAPIError):
        retry_conflicts(FakeSession(), action, attempts=3)
    assert len(calls) == 3
