"""The login throttle counts atomically (issue 21, point 4): wrong passwords sent in parallel cannot all read
the failure count before any of them is recorded. Each attempt is the login page's own unit of work
(`authenticate` in a write session, committed even on failure), run from many threads at once."""

from __future__ import annotations

import threading

import pytest

from app.auth.service import authenticate
from app.config import get_settings
from app.db import session_scope
from app.errors import TooManyRequests, Unauthorized


def _attempt_all(addresses: list[str], username: str = "alice") -> dict[str, int]:
    """One wrong password per address, all released together; how many were checked (401) or refused (429)."""
    outcomes: list[str] = []
    start = threading.Barrier(len(addresses))

    def attempt(ip: str) -> None:
        start.wait()
        try:
            with session_scope(write=True) as db:
                try:
                    authenticate(db, username, "wrong-password", ip)
                except Unauthorized:
                    outcomes.append("checked")
                except TooManyRequests:
                    outcomes.append("refused")
        except Exception as error:  # noqa: BLE001 - an error is an outcome the assertions report
            outcomes.append(f"error: {error!r}")

    threads = [threading.Thread(target=attempt, args=(ip,)) for ip in addresses]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return {name: outcomes.count(name) for name in set(outcomes)}


@pytest.fixture
def alice(users):
    return users.create("alice", "annotator")


def test_forty_parallel_wrong_passwords_from_one_address_check_at_most_the_limit(alice):
    limit = get_settings().login_max_failures
    counts = _attempt_all(["203.0.113.9"] * 40)
    assert set(counts) <= {"checked", "refused"}, counts
    assert counts.get("checked", 0) == limit, counts
    assert counts["refused"] == 40 - limit


def test_sixty_parallel_wrong_passwords_from_sixty_addresses_check_at_most_the_account_limit(alice):
    limit = get_settings().login_max_failures_per_user
    counts = _attempt_all([f"198.51.100.{i}" for i in range(60)])
    assert set(counts) <= {"checked", "refused"}, counts
    assert counts.get("checked", 0) == limit, counts
    assert counts["refused"] == 60 - limit
