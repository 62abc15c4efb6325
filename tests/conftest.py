"""Fixtures that build real databases: a SQLite file and a PostgreSQL database per test run.

Every database test runs on both (the `database_url` fixture is parametrized). On a machine without
PostgreSQL the postgresql half skips with the reason; under CI=true it fails instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("RANKFORGE_SHARED_DATA") or ROOT / "../shared/data").resolve()
"""The real third-party data (HH-RLHF, Open-Assistant, GSM8K, HumanEval) beside the checkout, or where
RANKFORGE_SHARED_DATA says; never copied into the project."""
PG_ADMIN_URL = os.environ.get("RANKFORGE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI") == "true"


def missing(reason: str):
    """Skip on a user's machine; fail under CI, where every service must be there."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing service is a failure)")
    pytest.skip(reason)


def _pg_create_database() -> str:
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"rankforge_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as error:
        missing(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {str(error).splitlines()[0]}")
    finally:
        admin.dispose()
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def _pg_drop_database(url: str) -> None:
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    admin.dispose()


def use_database(url: str, data_dir: Path) -> None:
    from app.config import get_settings
    from app.db import dispose_engines

    os.environ["RANKFORGE_DATABASE_URL"] = url
    os.environ["RANKFORGE_DATA_DIR"] = str(data_dir)
    get_settings.cache_clear()
    dispose_engines()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request, tmp_path_factory):
    from app.migrate import upgrade

    base = tmp_path_factory.mktemp(request.param)
    url = f"sqlite:///{base / 'rankforge.db'}" if request.param == "sqlite" else _pg_create_database()
    use_database(url, base / "data")
    upgrade(url)
    yield url
    from app.db import dispose_engines

    dispose_engines()
    if request.param == "postgresql":
        _pg_drop_database(url)


@pytest.fixture
def db_url(database_url, tmp_path):
    """The test's database, emptied first, and an artifact directory of its own."""
    from app.db import get_engine
    from app.models import Base

    use_database(database_url, tmp_path / "data")
    engine = get_engine(database_url)
    tables = [t.name for t in Base.metadata.sorted_tables]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE")
        else:
            for table in reversed(tables):
                conn.exec_driver_sql(f'DELETE FROM "{table}"')
    return database_url


@pytest.fixture
def db(db_url):
    from app.db import session_factory

    session = session_factory(db_url)()
    yield session
    session.rollback()
    session.close()


@pytest.fixture
def app(db_url):
    from app.main import create_app

    return create_app()


@pytest.fixture
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app, base_url="http://testserver") as test_client:
        yield test_client


class Users:
    """Creates users and API tokens in the test database."""

    def __init__(self, url: str):
        self.url = url
        self.tokens: dict[str, str] = {}

    def create(self, username: str, role: str, password: str = "secret-pass-1") -> dict:
        from app.auth.service import create_api_token
        from app.db import session_scope
        from app.users.service import create_user

        with session_scope(self.url) as session:
            user = create_user(session, username, role, password, actor=None)
            token = create_api_token(session, user, "test")
        self.tokens[username] = token
        return {"id": user.id, "username": username, "role": role, "password": password, "token": token,
                "headers": {"Authorization": f"Bearer {token}"}}  # fmt: skip


@pytest.fixture
def users(db_url):
    return Users(db_url)


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 10 s."""
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def live_server(db_url, tmp_path):
    """A real uvicorn process on this test's database."""
    port = free_port()
    env = os.environ | {"RANKFORGE_DATABASE_URL": db_url, "RANKFORGE_DATA_DIR": os.environ["RANKFORGE_DATA_DIR"]}
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed when the server stops
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.asgi:app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    # A start limit, not a timing assertion: importing the app on a loaded 2-core machine has taken 20 s.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
        if process.poll() is not None:
            break
    else:
        process.kill()
        pytest.fail("the server did not start: " + (tmp_path / "server.log").read_text()[-2000:])
    if process.poll() is not None:
        pytest.fail("the server exited: " + (tmp_path / "server.log").read_text()[-2000:])
    yield url
    stop_process(process)
    log.close()


# ---------------------------------------------------------------------------------------------------------------
# an S3 API for the artifact store (app.store): moto's standalone server, one per session (tests/test_store_s3.py,
# tests/test_backup.py, tests/jobs/test_ray_launcher.py)

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_REGION": "us-east-1"}  # fmt: skip


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """The endpoint URL of a moto S3 server (its own process, stopped at the end)."""
    server = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    try:
        import moto.server  # noqa: F401
        import s3fs  # noqa: F401
    except ImportError as error:
        missing(f"moto[server] and s3fs are needed for the S3 store tests ({error}); pip install -e '.[dev]'")
    command = [server] if server else [sys.executable, "-m", "moto.server"]
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "w") as out:
        process = subprocess.Popen([*command, "-H", "127.0.0.1", "-p", str(port)], stdout=out,
                                   stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60  # a start limit, not a timing assertion
    while time.monotonic() < deadline and process.poll() is None:
        try:
            httpx.get(url + "/", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        process.kill()
        missing(f"moto_server did not start: {log.read_text()[-1000:]}")
    yield url
    stop_process(process)


@pytest.fixture
def s3_store(s3_server, monkeypatch):
    """RANKFORGE_ARTIFACT_STORE set to a fresh bucket prefix on the moto server, for this process."""
    import s3fs

    from app.config import get_settings

    env = S3_ENV | {"AWS_ENDPOINT_URL": s3_server}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    bucket = f"rf-{uuid.uuid4().hex[:10]}"
    s3fs.S3FileSystem.clear_instance_cache()
    s3fs.S3FileSystem().mkdir(bucket)
    store = f"s3://{bucket}/artifacts"
    monkeypatch.setenv("RANKFORGE_ARTIFACT_STORE", store)
    get_settings.cache_clear()
    yield {"url": store, "bucket": bucket, "env": env}
    get_settings.cache_clear()


def pytest_configure(config):
    config.addinivalue_line("markers", "only_db(name): run this test on that database only (others deselected)")


def pytest_collection_modifyitems(config, items):
    """`@pytest.mark.only_db("sqlite")`: a check that means nothing on the other database is deselected
    there, not skipped (a skip would read as a check that did not run)."""

    def excluded(item) -> bool:
        marker = item.get_closest_marker("only_db")
        callspec = getattr(item, "callspec", None)
        if marker is None or callspec is None or "database_url" not in callspec.params:
            return False
        return callspec.params["database_url"] not in marker.args

    dropped = [item for item in items if excluded(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not excluded(item)]
