"""Real headless Chromium against a real uvicorn server (the `live_server` fixture).

The browser tests run on the SQLite database only: what they check (pages, htmx swaps, keyboard
handling, escaping) does not depend on the database, and the PostgreSQL half of every service is
covered by the tests beside the services. The postgresql variants are deselected here (not skipped:
a skip would read as a check that could not run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, free_port, missing

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
E2E_DIR = Path(__file__).resolve().parent
# Set to a folder to keep screenshots of the pages under test (for looking at the UI by eye).
SCREENSHOT_DIR = os.environ.get("RANKFORGE_E2E_SCREENSHOTS")


def pytest_collection_modifyitems(config, items):
    # Collection hooks see every item of the session: touch only the ones in this folder.
    def is_postgres_e2e(item) -> bool:
        callspec = getattr(item, "callspec", None)
        return (E2E_DIR in Path(item.path).parents and callspec is not None
                and callspec.params.get("database_url") == "postgresql")  # fmt: skip

    deselected = [item for item in items if is_postgres_e2e(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not is_postgres_e2e(item)]


BUILD = """
import json
from app.migrate import upgrade
from app.demo.setup import seed_demo, ensure_tiny_models
from app.demo.history import build_history
from app.db import session_scope
from app.auth.service import create_api_token
from app.models import User
from sqlalchemy import select
upgrade(); seed_demo(); ensure_tiny_models()
history = build_history(log=lambda line: None)
with session_scope(write=True) as db:
    token = create_api_token(db, db.scalar(select(User).where(User.username == "admin")), "e2e")
print(json.dumps({"history": history, "token": token}))
"""


@pytest.fixture(scope="session")
def demo_site(tmp_path_factory):
    """The demo as `rankforge demo` first starts it (seed, tiny models, simulated history), built once for the
    session in a child process (its own SQLite file and artifact directory) and served by one uvicorn process:
    {url, token (an admin API token), history, build_seconds}. Tests read it; one adds an empty project."""
    base = tmp_path_factory.mktemp("demo")
    env = os.environ | {"RANKFORGE_DATABASE_URL": f"sqlite:///{base / 'demo.db'}",
                        "RANKFORGE_DATA_DIR": str(base / "data"), "OMP_NUM_THREADS": "1"}  # fmt: skip
    started = time.monotonic()
    built = subprocess.run([sys.executable, "-c", BUILD], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    result = json.loads(built.stdout.strip().splitlines()[-1])
    result["build_seconds"] = time.monotonic() - started
    port = free_port()
    log = open(base / "server.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.asgi:app", "--host", "127.0.0.1", "--port",
                               str(port), "--log-level", "warning"], cwd=ROOT, env=env, stdout=log,
                              stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120  # a loaded 2-core CI machine can take long to import the app
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        server.kill()
        pytest.fail("the demo server did not start: " + (base / "server.log").read_text()[-2000:])
    yield {"url": url, "base": base, **result}
    server.terminate()
    try:
        server.wait(10)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        missing(f"Chromium is not installed at {CHROMIUM}: the browser tests need it")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("Playwright for Python is not installed: the browser tests need it")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def browser_problems() -> list[str]:
    """JavaScript errors and dialogs (alert, confirm...) seen by `page`: none is ever expected."""
    return []


@pytest.fixture
def page(browser, live_server, browser_problems):
    """A fresh browser context (no cookies) on the live server; fails the test on any JS error or dialog."""
    context = browser.new_context(base_url=live_server, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    tab = context.new_page()
    problems = browser_problems
    tab.on("pageerror", lambda error: problems.append(f"JavaScript error: {error}"))

    def refuse_dialog(dialog):
        problems.append(f"unexpected {dialog.type} dialog: {dialog.message!r}")
        dialog.dismiss()

    tab.on("dialog", refuse_dialog)
    yield tab
    context.close()
    assert not problems, problems


@pytest.fixture
def api(live_server):
    """An httpx client on the live server (pass a user's bearer headers per request)."""
    import httpx

    with httpx.Client(base_url=live_server, timeout=30) as client:
        yield client


def login(page, user: dict, next_path: str = "") -> None:
    """Log in through the login form, as a person would."""
    page.goto("/login" + (f"?next={next_path}" if next_path else ""))
    page.fill("input[name=username]", user["username"])
    page.fill("input[name=password]", user["password"])
    with page.expect_navigation():
        page.click("form[action='/login'] button[type=submit]")
    assert "/login" not in page.url, page.inner_text("main")


def screenshot(page, name: str) -> None:
    if SCREENSHOT_DIR:
        Path(SCREENSHOT_DIR).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / f"{name}.png"), full_page=True)
