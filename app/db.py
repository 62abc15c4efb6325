"""Engine and sessions. The request or job boundary commits; services never do.

SQLite: WAL, foreign keys, and transactions that we begin ourselves so a writer can take the
write lock up front (`BEGIN IMMEDIATE`, see `write_transaction`). Claims then serialize on the
lock instead of failing with "database is locked" half-way through and being retried.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import orjson
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from app.config import get_settings

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_sessionmakers: dict[str, sessionmaker[Session]] = {}
_write_sessionmakers: dict[str, sessionmaker[Session]] = {}


def is_sqlite(engine_or_session: Engine | Session) -> bool:
    bind = engine_or_session.get_bind() if isinstance(engine_or_session, Session) else engine_or_session
    return bind.dialect.name == "sqlite"


def json_loads(text: str | bytes):
    """JSON columns are parsed with orjson (several times faster on exports and statistics); the stdlib parser
    remains the fallback for what orjson refuses (NaN literals, integers beyond 64 bits)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


OWNER_ONLY_FILE, OWNER_ONLY_DIR = 0o600, 0o700


def _owner_only(path: Path, mode: int) -> None:
    """Tighten a file or directory we own to `mode` (one owned by someone else is left to its owner)."""
    try:
        if path.stat().st_uid == os.getuid() and path.stat().st_mode & 0o777 != mode:
            path.chmod(mode)
    except FileNotFoundError:
        pass


def secure_storage(url: str) -> None:
    """The SQLite file (and its WAL and SHM files, which SQLite creates with the database file's mode) and the
    artifact directory are readable by their owner only: they hold password hashes, token hashes, user text and
    encrypted secrets, and other local users (or code under test) must not copy them."""
    data_dir = str(get_settings().data_dir)
    if "://" not in data_dir:
        Path(data_dir).mkdir(parents=True, exist_ok=True, mode=OWNER_ONLY_DIR)
        _owner_only(Path(data_dir), OWNER_ONLY_DIR)
    database = make_url(url).database if url.startswith("sqlite") else None
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if not path.parent.is_dir():
        return  # a database in a folder that does not exist is unreachable (503), not silently made anew
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, OWNER_ONLY_FILE))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        _owner_only(file, OWNER_ONLY_FILE)


def make_engine(url: str) -> Engine:
    secure_storage(url)
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            json_deserializer=json_loads,
            connect_args={"check_same_thread": False, "timeout": 30},
            hide_parameters=True,  # error messages (and so logs) never carry values: tokens, hashes, user text
            pool_size=get_settings().db_pool_size,
            max_overflow=20,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            # Let SQLAlchemy's "begin" event emit BEGIN so we choose DEFERRED or IMMEDIATE.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            # A writer waits for the lock (milliseconds: transactions are short) rather than failing.
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            mode = "IMMEDIATE" if conn.get_execution_options().get("rankforge_write") else "DEFERRED"
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    engine = create_engine(
        url,
        json_deserializer=json_loads,
        pool_size=get_settings().db_pool_size,
        max_overflow=20,
        hide_parameters=True,
    )
    _ping_when_idle(engine)
    return engine


PING_AFTER_IDLE_SECONDS = 2.0
"""A pooled connection idle this long is pinged before use (a restarted or failed-over server has dropped it);
one back in use sooner is not: `pool_pre_ping` pinged every checkout, a round trip on every request."""


def _ping_when_idle(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _fresh(dbapi_conn, record):
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _idle(dbapi_conn, record):
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_conn, record, proxy):
        if time.monotonic() - record.info.get("idle_since", 0.0) < PING_AFTER_IDLE_SECONDS:
            return
        try:
            cursor = dbapi_conn.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
            dbapi_conn.rollback()
        except Exception as error:  # the pool discards this connection and checks out another (or a new) one
            raise DisconnectionError() from error


def get_engine(url: str | None = None) -> Engine:
    url = url or get_settings().database_url
    with _lock:
        if url not in _engines:
            _engines[url] = make_engine(url)
            _sessionmakers[url] = sessionmaker(_engines[url], expire_on_commit=False)
            # Same pool and events; on SQLite every transaction of these sessions starts BEGIN IMMEDIATE.
            writer = _engines[url].execution_options(rankforge_write=True)
            _write_sessionmakers[url] = sessionmaker(writer, expire_on_commit=False)
        return _engines[url]


def session_factory(url: str | None = None, *, write: bool = False) -> sessionmaker[Session]:
    """Sessions for `url`; `write=True` for units of work that write (see `session_scope`)."""
    url = url or get_settings().database_url
    get_engine(url)
    return (_write_sessionmakers if write else _sessionmakers)[url]


def dispose_engines() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _sessionmakers.clear()
        _write_sessionmakers.clear()


@contextmanager
def session_scope(url: str | None = None, *, write: bool = False) -> Iterator[Session]:
    """A unit of work for jobs and the CLI: commit on success, roll back on error.

    `write=True` for a unit that reads and then writes: on SQLite its transactions take the write lock when
    they begin (BEGIN IMMEDIATE). A DEFERRED transaction that read first cannot take the lock once another
    connection has committed since its read, and fails at once with "database is locked" (busy_timeout does
    not apply), which a worker heartbeating beside the CLI or the web app makes likely. Long reads that
    write only at the end (exports) stay DEFERRED and call `write_transaction` when they get there."""
    session = session_factory(url, write=write)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def analyze(session: Session, *tables: str) -> None:
    """PostgreSQL: refresh the planner's statistics of `tables` now, in the caller's transaction (ANALYZE counts
    the transaction's own new rows), for bulk loads: autovacuum may be off or late, and until its next pass the
    planner knows nothing of a new project's rows. SQLite: nothing (its planner keeps no such statistics here)."""
    if is_sqlite(session):
        return
    for table in tables:
        session.execute(text(f'ANALYZE "{table}"'))


_T = TypeVar("_T")
TRANSACTION_CONFLICTS = frozenset({"40P01", "40001"})
"""PostgreSQL's deadlock detected and serialization failure: the transaction was rolled back and may simply run again."""


def retry_conflicts(session: Session, action: Callable[[], _T], attempts: int = 3) -> _T:
    """Run `action` (a whole transaction's work, safe to repeat) again after PostgreSQL rolled it back for a deadlock
    or a serialization failure, up to `attempts` times; other errors, and the last conflict, go up as they are."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except DBAPIError as error:
            if getattr(error.orig, "sqlstate", None) not in TRANSACTION_CONFLICTS or attempt == attempts:
                raise
            session.rollback()
    raise AssertionError("unreachable")


def write_transaction(session: Session) -> None:
    """Start the session's transaction holding the write lock (SQLite `BEGIN IMMEDIATE`).

    Race-sensitive writes (claims, submits) call this first. Any read-only transaction the session
    has open is committed first (it holds nothing we need). On PostgreSQL this only makes sure a
    transaction is open; row locks (`FOR UPDATE [SKIP LOCKED]`) do the rest.
    """
    if not is_sqlite(session):
        return
    if session.in_transaction():
        session.commit()
    session.connection(execution_options={"rankforge_write": True})


_END = object()


def read_ahead(items: Iterator, connection) -> Iterator:
    """`items` (a generator that reads the database through `connection`). On PostgreSQL a reader thread runs it one
    or two items ahead (the connection is the thread's alone until this generator ends: close it, as build_snapshot
    does), so the server's work and the wire overlap this thread's (psycopg waits without the GIL); on SQLite, in
    line. An exception in the reader is raised here."""
    if connection.dialect.name != "postgresql":
        yield from items
        return
    ready: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as error:  # noqa: BLE001 (raised again in the consumer's thread)
            put(error)

    reader = threading.Thread(target=read, name="read-ahead", daemon=True)
    reader.start()
    try:
        while (item := ready.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join()
