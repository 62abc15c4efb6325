"""Security findings, fixed and kept fixed: deactivation revokes API tokens, login `next` refuses paths a
browser would read as off-site, and the API docs work without network access."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import select

from app.auth.pages import _safe_next
from app.auth.service import create_api_token
from app.models import ApiToken, User
from app.users.service import set_active
from tests.auth.test_auth import login

# ---------------------------------------------------------------------------------------------------
# deactivation


def test_deactivating_a_user_revokes_every_api_token_for_good(client, users, db):
    bob = users.create("bob", "engineer")
    second_token = create_api_token(db, db.get(User, bob["id"]), "script")
    db.commit()
    for token in (bob["token"], second_token):
        assert client.get("/api/v1/projects", headers={"Authorization": f"Bearer {token}"}).status_code == 200

    set_active(db, db.get(User, bob["id"]), False, actor=None)
    db.commit()
    tokens = db.scalars(select(ApiToken).where(ApiToken.user_id == bob["id"])).all()
    assert len(tokens) == 2 and all(token.revoked_at is not None for token in tokens)

    # Reactivating the account does not revive the old tokens; a new one works.
    set_active(db, db.get(User, bob["id"]), True, actor=None)
    db.commit()
    for token in (bob["token"], second_token):
        refused = client.get("/api/v1/projects", headers={"Authorization": f"Bearer {token}"})
        assert refused.status_code == 401, token
    fresh = create_api_token(db, db.get(User, bob["id"]), "after reactivation")
    db.commit()
    assert client.get("/api/v1/projects", headers={"Authorization": f"Bearer {fresh}"}).status_code == 200


def test_deactivating_one_user_leaves_other_tokens_alone(client, users, db):
    bob = users.create("bob", "engineer")
    carol = users.create("carol", "engineer")
    set_active(db, db.get(User, bob["id"]), False, actor=None)
    db.commit()
    assert client.get("/api/v1/projects", headers=carol["headers"]).status_code == 200
    carol_tokens = db.scalars(select(ApiToken).where(ApiToken.user_id == carol["id"])).all()
    assert [token.revoked_at for token in carol_tokens] == [None]


# ---------------------------------------------------------------------------------------------------
# login `next`

# A browser reads a backslash as "/" and drops tabs and newlines, so each of these could leave the site.
REFUSED_NEXT = [
    "/\\evil.example",
    "/\\\\evil.example",
    "/projects\\..\\..\\evil",
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r/evil.example",
    "/\x00/evil.example",
    "/\x0b/evil.example",
    "/\x1f/evil.example",
    "/projects\x7f",
]
KEPT_NEXT = ["/projects", "/projects/3/annotate", "/jobs?status=failed&page=2", "/projects/caf%C3%A9"]


@pytest.mark.parametrize("target", REFUSED_NEXT, ids=[repr(t) for t in REFUSED_NEXT])
def test_safe_next_refuses_backslashes_and_control_characters(target):
    assert _safe_next(target) == "/projects"


@pytest.mark.parametrize("target", KEPT_NEXT)
def test_safe_next_keeps_same_site_paths(target):
    assert _safe_next(target) == target


@pytest.mark.parametrize("target", ["/\\evil.example", "/\t/evil.example", "/\x00x"], ids=repr)
def test_login_with_a_tricky_next_lands_on_projects(client, users, target):
    users.create("alice", "admin")
    page = client.get("/login", params={"next": target}, headers={"Accept": "text/html"})
    assert 'name="next" value="/projects"' in page.text
    response = login(client, "alice", "secret-pass-1", next=target)
    assert response.status_code == 303 and response.headers["location"] == "/projects"


# ---------------------------------------------------------------------------------------------------
# API docs offline

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"
# The docs do not touch the database: one database is enough.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
URL_ATTRIBUTE = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)


@SQLITE_ONLY
def test_docs_page_loads_only_our_own_files(client):
    docs = client.get("/docs")
    assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]
    assert "http://" not in docs.text and "https://" not in docs.text, "the docs page must not need a CDN"
    urls = URL_ATTRIBUTE.findall(docs.text)
    assert any(url.endswith("swagger-ui-bundle.js") for url in urls), urls
    assert any(url.endswith("swagger-ui.css") for url in urls), urls
    for url in urls:
        assert url.startswith("/static/"), url
        served = client.get(url)
        assert served.status_code == 200, url
        assert served.content == (STATIC_DIR / url.removeprefix("/static/")).read_bytes(), url
    # The spec Swagger UI loads is ours too, and lists the API.
    assert "url: '/openapi.json'" in docs.text
    spec = client.get("/openapi.json").json()
    assert "/api/v1/projects" in spec["paths"]
    assert (STATIC_DIR / "swagger" / "LICENSE").is_file()


@SQLITE_ONLY
def test_redoc_is_not_offered(client):
    # ReDoc would load its script from a CDN: it is switched off rather than left blank.
    assert client.get("/redoc", headers={"Accept": "application/json"}).status_code == 404


@SQLITE_ONLY
def test_docs_render_in_a_browser_with_every_outside_request_refused(live_server):
    from tests.conftest import missing

    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        missing(f"Chromium is not installed at {chromium}: this browser check needs it")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("Playwright for Python is not installed: this browser check needs it")
    outside: list[str] = []
    errors: list[str] = []
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=args)
        try:
            context = browser.new_context()
            context.set_default_timeout(15_000)

            def only_the_app(route):
                if route.request.url.startswith(live_server):
                    return route.continue_()
                outside.append(route.request.url)
                return route.abort()

            context.route("**/*", only_the_app)
            page = context.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{live_server}/docs")
            # Swagger UI has fetched /openapi.json and drawn the operations.
            page.wait_for_selector(".swagger-ui .opblock-summary-path[data-path='/api/v1/projects']")
            assert "Rankforge" in page.locator(".swagger-ui .info .title").inner_text()
        finally:
            browser.close()
    assert outside == [], outside
    assert errors == [], errors
