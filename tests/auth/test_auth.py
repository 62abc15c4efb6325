"""Browser login, sessions, API tokens, CSRF, login throttling and open redirects, through the real app."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import urlparse

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from app.auth.service import sha256_hex
from app.models import ApiToken, AuthSession, LoginFailure, Prompt, User, utcnow
from app.users.service import set_active
from tests.helpers import import_lines, make_project, native_lines

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def form_csrf(html: str) -> str:
    match = CSRF_FIELD.search(html)
    assert match, "no csrf_token field in the page"
    return match.group(1)


def login(client: TestClient, username: str, password: str, *, next: str | None = None, headers=None):
    """Log in through the form, as a browser does: GET /login (sets rf_csrf), then POST it back."""
    page = client.get("/login", headers={"Accept": "text/html"})
    assert page.status_code == 200
    form = {"username": username, "password": password, "csrf_token": form_csrf(page.text)}
    if next is not None:
        form["next"] = next
    return client.post("/login", data=form, headers=headers or {}, follow_redirects=False)


def set_cookie_header(response, name: str) -> str:
    headers = [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
    assert headers, f"no {name} cookie set"
    return headers[-1]


def session_csrf(client: TestClient) -> str:
    """The logged-in session's CSRF token, as a page shows it."""
    page = client.get("/projects", headers={"Accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 200, page.status_code
    return form_csrf(page.text)


# ---------------------------------------------------------------------------------------------------
# login form, cookies, stored secrets


def test_login_form_sets_csrf_cookie_and_session_cookie_flags(client, users, db):
    users.create("alice", "admin")
    page = client.get("/login", headers={"Accept": "text/html"})
    cookie_header = set_cookie_header(page, "rf_csrf")
    assert client.cookies.get("rf_csrf") == form_csrf(page.text)
    assert "httponly" in cookie_header.lower() and "samesite=lax" in cookie_header.lower()

    response = client.post("/login", data={"username": "alice", "password": "secret-pass-1",
                                           "csrf_token": form_csrf(page.text)}, follow_redirects=False)  # fmt: skip
    assert response.status_code == 303 and response.headers["location"] == "/projects"
    flags = [part.strip().lower() for part in set_cookie_header(response, "rf_session").split(";")[1:]]
    assert "httponly" in flags and "samesite=lax" in flags
    assert "secure" not in flags  # plain http, no proxy saying https
    # The cookie is a random token; the database keeps only its hash.
    token = client.cookies.get("rf_session")
    assert db.get(AuthSession, sha256_hex(token)) is not None
    assert db.scalar(select(AuthSession).where(AuthSession.id == token)) is None
    assert client.get("/api/v1/projects").status_code == 200


@pytest.mark.parametrize("how", ["forwarded-proto", "https-url"])
def test_session_cookie_is_secure_over_https(app, users, how):
    users.create("alice", "admin")
    base_url = "https://testserver" if how == "https-url" else "http://testserver"
    headers = {"X-Forwarded-Proto": "https"} if how == "forwarded-proto" else {}
    with TestClient(app, base_url=base_url) as browser:
        response = login(browser, "alice", "secret-pass-1", headers=headers)
    assert response.status_code == 303
    flags = [part.strip().lower() for part in set_cookie_header(response, "rf_session").split(";")[1:]]
    assert "secure" in flags and "httponly" in flags and "samesite=lax" in flags


def test_login_without_or_with_wrong_csrf_is_refused(client, users):
    users.create("alice", "admin")
    client.get("/login", headers={"Accept": "text/html"})
    missing = client.post(
        "/login", data={"username": "alice", "password": "secret-pass-1"}, follow_redirects=False
    )
    wrong = client.post("/login", data={"username": "alice", "password": "secret-pass-1", "csrf_token": "forged"},
                        follow_redirects=False)  # fmt: skip
    assert (missing.status_code, wrong.status_code) == (403, 403)
    assert "rf_session" not in client.cookies


def test_wrong_password_is_refused(client, users):
    users.create("alice", "admin")
    response = login(client, "alice", "not-the-password")
    assert response.status_code == 401 and "rf_session" not in client.cookies
    assert login(client, "nobody", "secret-pass-1").status_code == 401


def test_passwords_are_argon2_hashes_and_tokens_only_sha256(users, db):
    alice = users.create("alice", "admin", password="correct horse battery")
    user = db.scalar(select(User).where(User.username == "alice"))
    assert user.password_hash.startswith("$argon2")
    assert "correct horse battery" not in user.password_hash
    token_row = db.scalar(select(ApiToken).where(ApiToken.user_id == user.id))
    assert token_row.token_hash == sha256_hex(alice["token"])
    stored = [str(getattr(token_row, column.key)) for column in ApiToken.__table__.columns]
    assert not any(alice["token"] in value for value in stored), "the API token itself is in the database"


# ---------------------------------------------------------------------------------------------------
# logout, deactivation


def test_logout_revokes_the_session_on_the_server(client, users):
    users.create("alice", "admin")
    assert login(client, "alice", "secret-pass-1").status_code == 303
    old_cookie = client.cookies.get("rf_session")
    csrf = session_csrf(client)
    response = client.post("/logout", headers={"X-CSRF-Token": csrf}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login"
    # A stolen copy of the cookie is worthless now.
    client.cookies.set("rf_session", old_cookie)
    assert client.get("/api/v1/projects").status_code == 401
    page = client.get("/projects", headers={"Accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login")


def test_deactivating_a_user_kills_sessions_and_tokens(client, users, db):
    bob = users.create("bob", "annotator")
    assert login(client, "bob", "secret-pass-1").status_code == 303
    old_cookie = client.cookies.get("rf_session")
    assert client.get("/api/v1/projects").status_code == 200
    assert client.get("/api/v1/projects", headers=bob["headers"]).status_code == 200

    set_active(db, db.get(User, bob["id"]), False, actor=None)
    db.commit()
    assert client.get("/api/v1/projects").status_code == 401
    client.cookies.delete("rf_session")
    assert client.get("/api/v1/projects", headers=bob["headers"]).status_code == 401
    assert login(client, "bob", "secret-pass-1").status_code == 401

    # The sessions were revoked, not just hidden: reactivating does not bring them back.
    set_active(db, db.get(User, bob["id"]), True, actor=None)
    db.commit()
    client.cookies.set("rf_session", old_cookie)
    assert client.get("/api/v1/projects").status_code == 401


# ---------------------------------------------------------------------------------------------------
# login throttling


def test_five_wrong_passwords_lock_the_account_from_that_address(app, users, db):
    users.create("alice", "admin")
    users.create("carol", "admin")
    with TestClient(app, client=("203.0.113.7", 40000)) as attacker:
        for _ in range(5):
            assert login(attacker, "alice", "guess").status_code == 401
        locked = login(attacker, "alice", "secret-pass-1")
        assert locked.status_code == 429, "the right password must be refused while locked"
        assert "rf_session" not in attacker.cookies
        # Only that account is locked there.
        assert login(attacker, "carol", "secret-pass-1").status_code == 303
    with TestClient(app, client=("198.51.100.9", 40000)) as elsewhere:
        assert login(elsewhere, "alice", "secret-pass-1").status_code == 303

    # The lock lasts 15 minutes: age the failures past that and the right password works again.
    db.execute(update(LoginFailure).values(created_at=utcnow() - timedelta(minutes=16)))
    db.commit()
    with TestClient(app, client=("203.0.113.7", 40000)) as attacker:
        assert login(attacker, "alice", "secret-pass-1").status_code == 303


def test_four_failures_then_success_clears_the_count(app, users):
    users.create("alice", "admin")
    with TestClient(app, client=("203.0.113.8", 40000)) as browser:
        for _ in range(4):
            assert login(browser, "alice", "guess").status_code == 401
        assert login(browser, "alice", "secret-pass-1").status_code == 303
        for _ in range(4):
            assert login(browser, "alice", "guess").status_code == 401
        assert login(browser, "alice", "secret-pass-1").status_code == 303


# ---------------------------------------------------------------------------------------------------
# CSRF for logged-in browsers


def test_browser_session_posts_need_the_csrf_token(client, users):
    users.create("alice", "admin")
    assert login(client, "alice", "secret-pass-1").status_code == 303
    csrf = session_csrf(client)
    body = {"name": "Via browser", "mode": "pairwise"}

    assert client.post("/api/v1/projects", json=body).status_code == 403
    assert client.post("/api/v1/projects", json=body, headers={"X-CSRF-Token": "forged"}).status_code == 403
    created = client.post("/api/v1/projects", json=body, headers={"X-CSRF-Token": csrf})
    assert created.status_code == 201, created.text

    form = {"name": "Via form", "mode": "pairwise", "overlap": "1"}
    no_token = client.post(
        "/projects/new", data=form, headers={"Accept": "text/html"}, follow_redirects=False
    )
    assert no_token.status_code == 403
    with_field = client.post("/projects/new", data=form | {"csrf_token": csrf}, follow_redirects=False)
    assert with_field.status_code == 303, with_field.text
    with_header = client.post("/projects/new", data=form | {"name": "Via header"}, headers={"X-CSRF-Token": csrf},
                              follow_redirects=False)  # fmt: skip
    assert with_header.status_code == 303
    names = {p["name"] for p in client.get("/api/v1/projects").json()}
    assert names == {"Via browser", "Via form", "Via header"}


def test_multipart_upload_carries_the_csrf_field(client, users, db):
    admin = users.create("alice", "admin")
    project = make_project(client, admin)
    login(client, "alice", "secret-pass-1")
    csrf = session_csrf(client)
    url = f"/projects/{project['id']}/import"
    upload = {"file": ("prompts.jsonl", native_lines(2))}
    refused = client.post(url, data={"format": "native"}, files=upload, headers={"Accept": "text/html"})
    assert refused.status_code == 403
    assert db.scalar(select(func.count()).select_from(Prompt)) == 0
    accepted = client.post(url, data={"format": "native", "csrf_token": csrf}, files=upload)
    assert accepted.status_code == 200, accepted.text
    db.rollback()  # end the test session's read snapshot (SQLite WAL) to see the import
    assert db.scalar(select(func.count()).select_from(Prompt)) == 2


def test_error_pages_render_for_logged_in_browsers(client, users):
    users.create("anna", "annotator")
    login(client, "anna", "secret-pass-1")
    forbidden = client.get("/projects/new", headers={"Accept": "text/html"})
    assert forbidden.status_code == 403 and "anna" in forbidden.text
    missing = client.get("/projects/999999", headers={"Accept": "text/html"})
    assert missing.status_code == 404 and "anna" in missing.text


def test_logout_without_csrf_is_refused(client, users):
    users.create("alice", "admin")
    login(client, "alice", "secret-pass-1")
    assert client.post("/logout", follow_redirects=False).status_code == 403
    assert client.get("/api/v1/projects").status_code == 200


def test_bearer_token_calls_need_no_csrf(client, users):
    admin = users.create("alice", "admin")
    response = client.post("/api/v1/projects", json={"name": "Scripted"}, headers=admin["headers"])
    assert response.status_code == 201
    bad = client.post("/api/v1/projects", json={"name": "x"}, headers={"Authorization": "Bearer rf_forged"})
    assert bad.status_code == 401


# ---------------------------------------------------------------------------------------------------
# open redirects


OFF_SITE = ["//evil.com", "//evil.com/projects", "https://evil.com", "http:evil.com", "\\\\evil.com",
            "javascript:alert(1)"]  # fmt: skip
# Browsers read "/\\" and "/<tab>/" like "//"; these may come back only percent-quoted, as a local path.
LOOKS_LOCAL = ["/\\evil.com", "/\t/evil.com"]


@pytest.mark.parametrize("target", OFF_SITE + LOOKS_LOCAL)
def test_login_never_redirects_off_site(client, users, target):
    users.create("alice", "admin")
    page = client.get("/login", params={"next": target}, headers={"Accept": "text/html"})
    if target in OFF_SITE:
        assert 'name="next" value="/projects"' in page.text
    response = login(client, "alice", "secret-pass-1", next=target)
    assert response.status_code == 303
    location = response.headers["location"]
    parsed = urlparse(location)
    assert not parsed.scheme and not parsed.netloc, location
    assert location.startswith("/") and not location.startswith(("//", "/\\")), location
    assert not any(ch in location for ch in "\t\n\r\\"), location
    if target in OFF_SITE:
        assert location == "/projects"


def test_login_keeps_a_same_site_next(client, users):
    users.create("alice", "admin")
    response = login(client, "alice", "secret-pass-1", next="/projects/3/annotate")
    assert response.headers["location"] == "/projects/3/annotate"


# ---------------------------------------------------------------------------------------------------
# untrusted model text on the rating page

XSS_SCRIPT = "<script>alert(1)</script>"
XSS_IMG = "<img src=x onerror=alert(1)>"


def test_completions_render_escaped_and_model_names_stay_hidden(client, users):
    admin = users.create("alice", "admin")
    rater = users.create("rita", "annotator")
    project = make_project(client, admin)
    row = ('{"prompt": "Say <b>hi</b>", "external_id": "x1", "completions": ['
           f'{{"text": "{XSS_SCRIPT}", "model": "secret-model-alpha"}}, {{"text": "{XSS_IMG}", "model": "secret-model-beta"}}]}}\n')  # fmt: skip
    assert import_lines(client, admin, project["id"], row.encode()).status_code == 200

    assert login(client, "rita", "secret-pass-1").status_code == 303
    # A GET never claims (prefetchers follow GETs): claim with the POST the page makes, then load the page.
    claimed = client.post(f"/projects/{project['id']}/annotate/next", data={"csrf_token": session_csrf(client)},
                          follow_redirects=False)  # fmt: skip
    assert claimed.status_code == 303
    page = client.get(f"/projects/{project['id']}/annotate", headers={"Accept": "text/html"})
    assert page.status_code == 200
    html = page.text
    assert "<script>alert" not in html and "<img src=x" not in html and "<b>hi</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "secret-model" not in html

    task = client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=rater["headers"])
    assert task.status_code == 200
    assert "secret-model" not in task.text
    assert {o["text"] for o in task.json()["options"]} == {XSS_SCRIPT, XSS_IMG}
