"""Login throttling that holds: X-Forwarded-For is believed only from configured proxies (also when uvicorn
serves the app with its default proxy-header trust of loopback), failures also count per account across
addresses, old failure rows are pruned, and sessions record the real address."""

from __future__ import annotations

import os
import re
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from app.models import AuthSession, LoginFailure, utcnow
from app.proxies import client_address, parse_networks
from tests.auth.test_auth import login

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def trusted_proxies():
    """Configure RANKFORGE_TRUSTED_PROXIES for the app under test; restored afterwards."""
    from app.config import get_settings

    def configure(value: str) -> None:
        os.environ["RANKFORGE_TRUSTED_PROXIES"] = value
        get_settings.cache_clear()

    yield configure
    os.environ.pop("RANKFORGE_TRUSTED_PROXIES", None)
    get_settings.cache_clear()


def test_client_address_believes_forwarded_for_only_from_trusted_proxies():
    networks = parse_networks("10.0.0.0/8, 192.0.2.1, ::1")
    assert client_address("203.0.113.5", ["1.2.3.4"], networks) == "203.0.113.5"  # peer not a proxy
    assert client_address("10.1.2.3", [], networks) == "10.1.2.3"
    assert client_address("10.1.2.3", ["1.2.3.4"], networks) == "1.2.3.4"
    # Right to left: the spoofed leftmost entry is ignored, the first untrusted hop is the client.
    assert client_address("10.1.2.3", ["6.6.6.6, 1.2.3.4, 10.9.9.9"], networks) == "1.2.3.4"
    assert client_address("10.1.2.3", ["6.6.6.6", "1.2.3.4:5555"], networks) == "1.2.3.4"
    assert client_address("::1", ["[2001:db8::1]:443"], networks) == "2001:db8::1"
    # Garbage never becomes the address: the last address a trusted proxy vouched for is used.
    assert client_address("10.1.2.3", ["1.2.3.4, " + "x" * 100], networks) == "10.1.2.3"
    assert client_address("10.1.2.3", ["10.2.2.2"], networks) == "10.2.2.2"
    assert client_address("testclient", ["1.2.3.4"], networks) == "testclient"
    assert parse_networks("") == ()
    with pytest.raises(ValueError, match="not an address"):
        parse_networks("10.0.0.0/8, proxy.example")


def test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(app, users, db):
    users.create("alice", "admin")
    with TestClient(app, client=("203.0.113.7", 40000)) as attacker:
        for i in range(30):
            response = login(attacker, "alice", "guess", headers={"X-Forwarded-For": f"198.18.{i}.1"})
            assert response.status_code == (401 if i < 5 else 429), i
        assert login(attacker, "alice", "secret-pass-1").status_code == 429
    assert set(db.scalars(select(LoginFailure.ip))) == {"203.0.113.7"}


def test_behind_a_trusted_proxy_each_client_counts_apart_and_the_session_records_it(app, users, db, trusted_proxies):
    trusted_proxies("10.0.0.0/8")
    users.create("alice", "admin")
    with TestClient(app, client=("10.0.0.2", 40000)) as proxy:
        for _ in range(5):
            assert login(proxy, "alice", "guess", headers={"X-Forwarded-For": "198.51.100.1"}).status_code == 401
        assert login(proxy, "alice", "secret-pass-1", headers={"X-Forwarded-For": "198.51.100.1"}).status_code == 429
        # Another client behind the same proxy is not locked out by the first one's failures.
        ok = login(proxy, "alice", "secret-pass-1", headers={"X-Forwarded-For": "6.6.6.6, 198.51.100.2"})
        assert ok.status_code == 303
    assert db.scalars(select(AuthSession.ip)).all() == ["198.51.100.2"]


def test_failures_from_many_addresses_lock_the_account_everywhere(app, users, db, trusted_proxies):
    from app.config import get_settings

    trusted_proxies("10.0.0.0/8")
    users.create("alice", "admin")
    users.create("carol", "admin")
    limit = get_settings().login_max_failures_per_user
    assert limit > get_settings().login_max_failures
    with TestClient(app, client=("10.0.0.2", 40000)) as proxy:
        for i in range(limit):  # one wrong password from each of `limit` addresses: no per-address lock
            assert login(proxy, "alice", "guess", headers={"X-Forwarded-For": f"198.18.{i}.1"}).status_code == 401
        locked = login(proxy, "alice", "secret-pass-1", headers={"X-Forwarded-For": "198.51.100.77"})
        assert locked.status_code == 429, "the right password must be refused while the account is locked"
        assert login(proxy, "carol", "secret-pass-1", headers={"X-Forwarded-For": "198.18.0.1"}).status_code == 303
    db.execute(update(LoginFailure).values(created_at=utcnow() - timedelta(minutes=16)))
    db.commit()
    with TestClient(app, client=("10.0.0.2", 40000)) as proxy:
        assert login(proxy, "alice", "secret-pass-1", headers={"X-Forwarded-For": "198.51.100.77"}).status_code == 303


def test_old_login_failures_are_pruned(app, users, db):
    users.create("alice", "admin")
    db.add_all([LoginFailure(username=f"old{i}", ip="192.0.2.1", created_at=utcnow() - timedelta(hours=2))
                for i in range(50)])  # fmt: skip
    db.commit()
    with TestClient(app, client=("203.0.113.7", 40000)) as browser:
        assert login(browser, "alice", "guess").status_code == 401
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(LoginFailure)) == 1


def _login_over_http(base: str, username: str, password: str, forwarded_for: str) -> httpx.Response:
    with httpx.Client(base_url=base) as browser:
        page = browser.get("/login", headers={"Accept": "text/html"})
        csrf = CSRF_FIELD.search(page.text).group(1)
        return browser.post("/login", data={"username": username, "password": password, "csrf_token": csrf},
                            headers={"X-Forwarded-For": forwarded_for})  # fmt: skip


def test_uvicorn_default_proxy_trust_of_loopback_does_not_bypass_the_lock(live_server, users, db):
    """The live server is `uvicorn app.asgi:app` with uvicorn's defaults (proxy headers on, loopback trusted):
    before the fix, 30 wrong passwords each from a different spoofed address were never locked."""
    users.create("alice", "admin")
    statuses = [_login_over_http(live_server, "alice", "guess", f"198.18.{i}.1").status_code for i in range(8)]
    assert statuses == [401] * 5 + [429] * 3
    assert _login_over_http(live_server, "alice", "secret-pass-1", "198.18.99.1").status_code == 429
    users.create("carol", "admin")
    assert _login_over_http(live_server, "carol", "secret-pass-1", "198.18.0.9").status_code in (200, 303)
    db.expire_all()
    assert db.scalars(select(AuthSession.ip)).all() == ["127.0.0.1"]  # the real peer, not the spoofed one
