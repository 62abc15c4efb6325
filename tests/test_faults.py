"""Faults and the hardened surface: a database outage answers 503 with Retry-After (and, under load through a
proxy that we cut, loses no acknowledged judgment, overfills no comparison, and recovers without a restart);
/healthz tells no internals; /metrics needs a staff token or a scrape address; security headers on every
response, 500s included; no-store on pages; a GET of the rating page claims nothing; SQL parameters never reach
error messages; `rankforge demo` stops its worker on SIGTERM and SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.auth.test_auth import login, session_csrf
from tests.conftest import ROOT, free_port
from tests.helpers import import_lines, make_project, native_lines
from tests.tcp_proxy import TcpProxy

UNREACHABLE_PG = "postgresql+psycopg://postgres@127.0.0.1:1/unreachable"


@pytest.fixture
def settings_env():
    """Set RANKFORGE_* variables for one test (settings re-read, engines dropped); restored afterwards."""
    from app.config import get_settings
    from app.db import dispose_engines

    saved = dict(os.environ)

    def configure(**values: str) -> None:
        os.environ.update({f"RANKFORGE_{k.upper()}": v for k, v in values.items()})
        get_settings.cache_clear()
        dispose_engines()

    yield configure
    os.environ.clear()
    os.environ.update(saved)
    get_settings.cache_clear()
    dispose_engines()


# ---------------------------------------------------------------------------------------------------------------
# database down: 503, healthz


def test_unreachable_database_gives_503_with_retry_after_and_healthz_tells_no_internals(settings_env):
    from app.main import create_app

    settings_env(database_url=UNREACHABLE_PG)
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        health = client.get("/healthz")
        assert health.status_code == 503
        assert health.json() == {"status": "unavailable", "database": "unavailable"}
        for secret in ("127.0.0.1", "unreachable", "psycopg", "connection", "5432"):
            assert secret not in health.text
        api = client.get("/api/v1/projects", headers={"Authorization": "Bearer rf_whatever"})
        assert api.status_code == 503 and api.headers["retry-after"].isdigit()
        assert "127.0.0.1" not in api.text and "psycopg" not in api.text
        assert api.headers["x-content-type-options"] == "nosniff"
        client.cookies.set("rf_session", "x")
        page = client.get("/projects", headers={"Accept": "text/html"})
        assert page.status_code == 503 and "text/html" in page.headers["content-type"]
        assert "Retry-After" in page.headers


def test_healthz_ok(client):
    assert client.get("/healthz").json() == {"status": "ok", "database": "ok"}


# ---------------------------------------------------------------------------------------------------------------
# /metrics


def test_metrics_need_a_staff_token_or_a_scrape_address(client, users, settings_env, app):
    anna = users.create("anna", "annotator")
    eng = users.create("eng", "engineer")
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=anna["headers"]).status_code == 403
    ok = client.get("/metrics", headers=eng["headers"])
    assert ok.status_code == 200 and "rankforge_http_requests_total" in ok.text and "rankforge_database_up 1" in ok.text
    settings_env(metrics_scrape_addresses="10.0.0.0/8")
    with TestClient(app, client=("10.3.4.5", 9999)) as prometheus:
        assert prometheus.get("/metrics").status_code == 200
    with TestClient(app, client=("192.0.2.9", 9999)) as stranger:
        assert stranger.get("/metrics", headers={"X-Forwarded-For": "10.3.4.5"}).status_code == 401


# ---------------------------------------------------------------------------------------------------------------
# headers


def test_security_headers_on_500s_and_no_store_on_pages(app, client):
    from app.auth.deps import public

    @app.get("/boom", dependencies=[__import__("fastapi").Depends(public)])
    def boom():
        raise RuntimeError("boom")

    app.middleware_stack = None  # rebuilt with the new route
    with TestClient(app, raise_server_exceptions=False) as raw:
        failed = raw.get("/boom")
    assert failed.status_code == 500
    assert "content-security-policy" in failed.headers and failed.headers["x-frame-options"] == "DENY"
    assert failed.headers["cache-control"] == "no-store"

    login_page = client.get("/login", headers={"Accept": "text/html"})
    assert login_page.headers["cache-control"] == "no-store"
    assert client.get("/api/v1/projects").headers["cache-control"] == "no-store"  # a 401, also not stored
    static = client.get("/static/htmx.min.js")
    assert static.status_code == 200 and static.headers.get("cache-control") != "no-store"


# ---------------------------------------------------------------------------------------------------------------
# no state change on GET


def test_getting_the_rating_page_claims_nothing_a_post_does(client, users, db_url):
    from app.db import session_scope
    from app.models import Assignment

    admin = users.create("admin", "admin")
    users.create("rita", "annotator")
    project = make_project(client, admin)
    assert import_lines(client, admin, project["id"], native_lines(2)).status_code == 200
    assert login(client, "rita", "secret-pass-1").status_code == 303

    def assignments():
        with session_scope(db_url) as session:
            return session.scalars(sa.select(Assignment.id)).all()

    page = client.get(f"/projects/{project['id']}/annotate", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert assignments() == []  # a prefetch of this URL takes no lease
    assert f'hx-post="/projects/{project["id"]}/annotate/next"' in page.text
    fragment = client.get(f"/projects/{project['id']}/annotate", headers={"HX-Request": "true"})
    assert assignments() == [] and 'id="claiming"' in fragment.text

    csrf = session_csrf(client)
    claimed = client.post(f"/projects/{project['id']}/annotate/next", headers={"HX-Request": "true",
                                                                                "X-CSRF-Token": csrf})  # fmt: skip
    assert claimed.status_code == 200 and 'id="judgment-form"' in claimed.text
    assert len(assignments()) == 1
    # A reload shows the lease it holds, still without claiming another.
    again = client.get(f"/projects/{project['id']}/annotate", headers={"Accept": "text/html"})
    assert 'id="judgment-form"' in again.text and len(assignments()) == 1
    # Without the CSRF token a claim is refused; a plain form post is redirected to the page.
    assert client.post(f"/projects/{project['id']}/annotate/next").status_code == 403
    form = client.post(f"/projects/{project['id']}/annotate/next", data={"csrf_token": csrf}, follow_redirects=False)
    assert form.status_code == 303 and len(assignments()) == 1  # the held lease is resumed, not a second one


# ---------------------------------------------------------------------------------------------------------------
# SQL parameters never in error messages (and so never in error logs)


def test_database_errors_carry_no_sql_parameters(db_url):
    from app.db import get_engine

    secret = "csrf-token-7f3a9b1c-session-hash"
    with pytest.raises(sa.exc.DBAPIError) as raised, get_engine(db_url).connect() as conn:
        conn.execute(sa.text("INSERT INTO no_such_table (x) VALUES (:value)"), {"value": secret})
    assert secret not in str(raised.value)
    assert "hidden" in str(raised.value)


# ---------------------------------------------------------------------------------------------------------------
# rankforge demo stops its worker


DEMO_DRIVER = """
import os, subprocess, sys
import app.demo.setup as setup
setup.seed_demo = lambda: None
setup.ensure_tiny_models = lambda: None
def start_worker():
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(os.environ["WORKER_PID_FILE"], "w") as f:
        f.write(str(worker.pid))
    return worker
setup._start_worker = start_worker
setup.run_demo(host="127.0.0.1", port=int(sys.argv[1]), with_worker=True, empty=True)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_demo_stops_its_worker_on_sigterm_and_sigint(tmp_path, sig):
    port = free_port()
    pid_file = tmp_path / "worker.pid"
    env = os.environ | {"RANKFORGE_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}",
                        "RANKFORGE_DATA_DIR": str(tmp_path / "data"), "WORKER_PID_FILE": str(pid_file)}  # fmt: skip
    demo = subprocess.Popen([sys.executable, "-c", DEMO_DRIVER, str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    worker_pid = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if pid_file.exists() and httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert demo.poll() is None, "the demo exited early"
            time.sleep(0.2)
        worker_pid = int(pid_file.read_text())
        assert _alive(worker_pid)
        demo.send_signal(sig)
        demo.wait(30)
        deadline = time.monotonic() + 15
        while _alive(worker_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker_pid), f"the worker outlived the demo after {sig.name}"
    finally:
        if demo.poll() is None:
            demo.kill()
        if worker_pid and _alive(worker_pid):
            os.kill(worker_pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------------------------
# an outage under load (PostgreSQL only: the proxy cuts this test's connections, the shared cluster stays up)


def _start_server(database_url: str, log_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = os.environ | {"RANKFORGE_DATABASE_URL": database_url, "RANKFORGE_DB_POOL_SIZE": "5"}
    log = open(log_path, "w")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.asgi:app", "--host", "127.0.0.1", "--port",
                                str(port), "--log-level", "warning"], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("server did not start: " + log_path.read_text()[-2000:])


class RaterLoad:
    """Raters claiming and submitting as fast as the server answers; records what the clients saw."""

    def __init__(self, url: str, project_id: int, tokens: list[str]):
        self.url, self.project_id, self.tokens = url, project_id, tokens
        self.acknowledged: set[int] = set()
        self.statuses: dict[int, int] = {}
        self.failures: list[float] = []  # times of 5xx / transport errors
        self.successes: list[float] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def _note(self, status: int) -> None:
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            (self.failures if status >= 500 or status == 0 else self.successes).append(time.monotonic())

    def rater(self, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=15) as http:
            while not self.stop.is_set():
                try:
                    task = http.get(f"/api/v1/projects/{self.project_id}/tasks/next")
                except httpx.HTTPError:
                    self._note(0)
                    time.sleep(0.1)
                    continue
                self._note(task.status_code)
                if task.status_code == 204:
                    return
                if task.status_code != 200:
                    time.sleep(0.1)
                    continue
                body = task.json()
                ids = [o["id"] for o in body["options"]]
                for _ in range(50):  # retry the same assignment until answered (submits are idempotent)
                    try:
                        sent = http.post(f"/api/v1/assignments/{body['assignment_id']}/judgment",
                                         json={"ranking": [[ids[0]], ids[1:]]})  # fmt: skip
                    except httpx.HTTPError:
                        self._note(0)
                        time.sleep(0.1)
                        continue
                    self._note(sent.status_code)
                    if sent.status_code in (200, 201):
                        with self.lock:
                            self.acknowledged.add(body["assignment_id"])
                        break
                    if sent.status_code < 500:
                        break
                    time.sleep(0.1)

    def run(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.rater, args=(t,), daemon=True) for t in self.tokens]
        for thread in threads:
            thread.start()
        return threads


@pytest.mark.only_db("postgresql")
def test_postgresql_outage_under_load_loses_no_acknowledged_judgment_and_recovers(client, users, db_url, tmp_path):
    from app.db import get_engine

    admin = users.create("admin", "admin")
    raters = [users.create(f"r{i}", "annotator") for i in range(6)]
    project = make_project(client, admin, overlap=2, max_overlap=2)
    n_items = 300
    assert import_lines(client, admin, project["id"], native_lines(n_items)).status_code == 200

    parsed = sa.engine.make_url(db_url)
    proxy = TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
    proxied = parsed.set(host=proxy.host, port=proxy.port).render_as_string(hide_password=False)
    server, url = _start_server(proxied, tmp_path / "server.log")
    load = RaterLoad(url, project["id"], [r["token"] for r in raters])
    try:
        threads = load.run()
        deadline = time.monotonic() + 30
        while len(load.acknowledged) < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        cut_at = time.monotonic()
        proxy.cut()
        time.sleep(3.0)
        proxy.restore()
        restored_at = time.monotonic()
        for thread in threads:
            thread.join(60)
        load.stop.set()
        assert not any(thread.is_alive() for thread in threads), "raters did not finish after the outage"
        assert httpx.get(url + "/healthz").status_code == 200  # recovered without a restart
    finally:
        load.stop.set()
        server.terminate()
        server.wait(10)
        proxy.close()

    statuses = load.statuses
    assert statuses.get(503, 0) > 0, f"the outage was not seen: {statuses}"
    assert statuses.get(500, 0) == 0, f"500s during the outage: {statuses}; log: {(tmp_path / 'server.log').read_text()[-3000:]}"
    assert any(t > restored_at for t in load.successes) and any(cut_at <= t for t in load.failures)
    with get_engine(db_url).connect() as conn:
        stored = set(conn.execute(sa.text("SELECT assignment_id FROM judgment WHERE project_id = :p"),
                                  {"p": project["id"]}).scalars())  # fmt: skip
        over = conn.execute(sa.text(
            "SELECT c.id, c.required, c.n_judgments, count(j.id) FROM comparison c "
            "LEFT JOIN judgment j ON j.comparison_id = c.id WHERE c.project_id = :p "
            "GROUP BY c.id, c.required, c.n_judgments HAVING count(j.id) > c.required OR c.n_judgments <> count(j.id) "
            "OR c.n_leases < 0"), {"p": project["id"]}).all()  # fmt: skip
        complete = conn.execute(sa.text("SELECT count(*) FROM comparison WHERE project_id = :p AND n_judgments = 2"),
                                {"p": project["id"]}).scalar()  # fmt: skip
    missing = load.acknowledged - stored
    assert not missing, f"acknowledged but not stored: {sorted(missing)}"
    assert over == [], f"comparisons over their overlap or with wrong counters: {over}"
    assert complete == n_items  # every comparison filled once the database came back
