"""Bodies are bounded before they are read (issue 10, point 4).

The ASGI tests drive the app with a `receive` that makes the body up as it is asked for and counts what was
taken: "refused without reading" means the app never asked for a byte.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from urllib.parse import urlparse

import pytest

from app.bodylimit import CSRF_SCAN_BYTES, PUBLIC_BODY_PATHS
from app.config import get_settings
from tests.auth.test_routes_permissions import _route_contexts
from tests.helpers import make_project, native_lines

MiB = 2**20
CHUNK = 64 * 2**10


class Body:
    """An endless (or declared) body made up on demand; counts the bytes the app took."""

    def __init__(self, total: int | None = None, prefix: bytes = b""):
        self.total, self.prefix, self.taken, self.calls = total, prefix, 0, 0

    async def __call__(self):
        self.calls += 1
        if self.total is not None and self.taken >= self.total:
            await asyncio.sleep(3600)
        chunk = self.prefix[self.taken : self.taken + CHUNK] if self.taken < len(self.prefix) else b"a" * CHUNK
        self.taken += len(chunk)
        more = self.total is None or self.taken < self.total
        return {"type": "http.request", "body": chunk, "more_body": more}


def call(app, method: str, path: str, headers: dict[str, str], body: Body) -> tuple[int, bytes]:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5555), "server": ("testserver", 80),
    }  # fmt: skip
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    asyncio.run(asyncio.wait_for(app(scope, body, send), 30))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


@pytest.fixture
def small_import_limit(monkeypatch):
    monkeypatch.setenv("RANKFORGE_MAX_IMPORT_BYTES", str(1 * MiB))
    monkeypatch.setenv("RANKFORGE_MAX_BODY_BYTES", str(256 * 2**10))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def admin(users):
    return users.create("alice", "admin")


MULTIPART = "multipart/form-data; boundary=XyZ"


@pytest.mark.only_db("sqlite")
@pytest.mark.parametrize("path", ["/login", "/admin/users", "/projects/1/import", "/api/v1/projects/1/import",
                                  "/api/v1/projects", "/projects/1/settings"])  # fmt: skip
def test_a_declared_length_over_the_limit_is_413_unread(app, admin, path):
    body = Body(100 * MiB)
    status, text = call(app, "POST", path, {"content-type": MULTIPART, "content-length": str(100 * MiB),
                                            "authorization": f"Bearer {admin['token']}"}, body)  # fmt: skip
    assert status == 413, text
    assert body.taken == 0
    assert b"limit" in text


@pytest.mark.only_db("sqlite")
@pytest.mark.parametrize("path", ["/admin/users", "/projects/1/import", "/api/v1/projects/1/import",
                                  "/projects/1/members", "/api/v1/projects"])  # fmt: skip
def test_anonymous_bodies_are_never_read(app, path):
    body = Body(8 * MiB)
    for accept in ("application/json", "text/html"):
        status, _ = call(app, "POST", path, {"content-type": MULTIPART, "content-length": str(8 * MiB),
                                             "accept": accept}, body)  # fmt: skip
        assert status in (401, 303)
    assert body.taken == 0


@pytest.mark.only_db("sqlite")
def test_a_forged_session_cookie_is_refused_before_the_body(app):
    body = Body(8 * MiB)
    status, _ = call(app, "POST", "/projects/1/import", {"content-type": MULTIPART, "content-length": str(8 * MiB),
                                                          "cookie": "rf_session=forged"}, body)  # fmt: skip
    assert status == 401
    assert body.taken == 0


@pytest.mark.only_db("sqlite")
def test_a_chunked_body_is_cut_off_at_the_limit(app, admin, small_import_limit):
    project_url = "/api/v1/projects/1/import"
    body = Body(None)  # no Content-Length, never ends
    status, text = call(app, "POST", project_url, {"content-type": "application/x-ndjson",
                                                   "authorization": f"Bearer {admin['token']}"}, body)  # fmt: skip
    assert status == 413, text
    assert body.taken <= 1 * MiB + 64 * 2**10 + CHUNK
    body = Body(None)
    status, _ = call(app, "POST", "/api/v1/projects", {"content-type": "application/json",
                                                       "authorization": f"Bearer {admin['token']}"}, body)  # fmt: skip
    assert status == 413
    assert body.taken <= 256 * 2**10 + CHUNK


def login(client, username="alice", password="secret-pass-1") -> str:
    page = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    client.post("/login", data={"username": username, "password": password, "csrf_token": csrf})
    page = client.get("/projects/new")
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


@pytest.mark.only_db("sqlite")
def test_a_browser_upload_without_its_csrf_token_up_front_is_refused_after_a_prefix(app, client, admin):
    project = make_project(client, admin)
    csrf = login(client)
    cookie = f"rf_session={client.cookies.get('rf_session')}"
    path = f"/projects/{project['id']}/import"
    body = Body(8 * MiB, prefix=b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n')
    status, _ = call(app, "POST", path, {"content-type": MULTIPART, "content-length": str(8 * MiB), "cookie": cookie}, body)
    assert status == 403
    assert body.taken <= CSRF_SCAN_BYTES + CHUNK
    # With the token as the first field (as the page's form sends it), or in the header (htmx), it goes through.
    upload = {"file": ("prompts.jsonl", native_lines(2))}
    assert client.post(path, data={"csrf_token": csrf, "format": "native"}, files=upload).status_code == 200
    assert client.post(path, data={"format": "native"}, files={"file": ("p.jsonl", native_lines(3, prefix="q"))},
                       headers={"X-CSRF-Token": csrf}).status_code == 200  # fmt: skip
    wrong = client.post(path, data={"format": "native"}, files=upload, headers={"X-CSRF-Token": "nope"})
    assert wrong.status_code == 403


@pytest.mark.only_db("sqlite")
def test_uploads_within_the_limit_still_work(client, admin, small_import_limit):
    project = make_project(client, admin)
    data = native_lines(50)
    response = client.post(f"/api/v1/projects/{project['id']}/import", content=data, headers=admin["headers"])
    assert response.status_code == 200, response.text
    big = b"x" * (2 * MiB)
    response = client.post(f"/api/v1/projects/{project['id']}/import", content=big, headers=admin["headers"])
    assert response.status_code == 413


def test_public_body_routes_are_the_ones_the_route_table_marks_public(app):
    """PUBLIC_BODY_PATHS must list every route that takes a body from anyone, and nothing else."""

    def is_public(dependant) -> bool:
        return any(getattr(sub.call, "allowed_roles", ()) is None or is_public(sub) for sub in dependant.dependencies)

    public_with_body = {
        path for path, methods, dependant in _route_contexts(app)
        if methods - {"GET", "HEAD", "OPTIONS"} and is_public(dependant)
    }  # fmt: skip
    assert public_with_body == set(PUBLIC_BODY_PATHS)


@pytest.mark.only_db("sqlite")
def test_a_real_server_answers_413_before_the_body_is_sent(live_server):
    """Over a socket: headers declaring 100 MiB, no body at all; the answer comes at once."""
    url = urlparse(live_server)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(b"POST /api/v1/projects/1/import HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n"
                     b"Content-Type: application/x-ndjson\r\nContent-Length: 104857600\r\n\r\n")  # fmt: skip
        started = time.monotonic()
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert time.monotonic() - started < 5


@pytest.mark.only_db("sqlite")
def test_multipart_fields_other_than_files_are_capped(client, admin):
    big = "u" * (2 * MiB)
    response = client.post("/admin/users", files={"username": (None, big), "role": (None, "annotator"),
                                                  "password": (None, "long-enough-1")}, headers=admin["headers"])  # fmt: skip
    assert response.status_code == 400, response.text[:300]
