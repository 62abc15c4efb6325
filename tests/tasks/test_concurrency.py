"""The assignment contract under concurrent raters, over HTTP against a real uvicorn, on SQLite and PostgreSQL.

Every rater thread has its own httpx connection pool. The checks read the database afterwards:
exact judgment counts, distinct raters, no lease left behind, counters equal to the rows they count,
and a server log free of tracebacks and of SQLite's "database is locked".
"""

from __future__ import annotations

import random
import sqlite3
import threading
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from app.auth.service import hash_password, new_token, sha256_hex
from app.db import session_factory, session_scope, write_transaction
from app.models import ApiToken, Assignment, Comparison, Judgment, User
from tests.helpers import native_lines

RATERS = 40
COMPARISONS = 200
OVERLAP = 3
HTTP_TIMEOUT = 30.0
"""Generous: under a storm a request may queue behind many others; a hang still ends the test."""


def create_raters(db_url: str, n: int) -> list[dict]:
    """Annotators with API tokens, inserted directly: one argon2 hash shared by all (hashing 40 costs 2 s)."""
    password_hash = hash_password("secret-pass-1")
    raters = []
    with session_scope(db_url) as session:
        for i in range(n):
            user = User(
                username=f"rater{i:03d}", role="annotator", password_hash=password_hash, is_active=True
            )
            session.add(user)
            session.flush()
            token = new_token("rf_")
            session.add(
                ApiToken(user_id=user.id, name="test", token_hash=sha256_hex(token), prefix=token[:7])
            )
            raters.append({"id": user.id, "headers": {"Authorization": f"Bearer {token}"}})
    return raters


def create_project(base_url: str, admin: dict, *, comparisons: int, overlap: int) -> int:
    with httpx.Client(base_url=base_url, headers=admin["headers"], timeout=HTTP_TIMEOUT) as client:
        body = {"name": "Concurrency", "mode": "pairwise", "overlap": overlap, "allow_ties": False}
        project = client.post("/api/v1/projects", json=body)
        assert project.status_code == 201, project.text
        imported = client.post(f"/api/v1/projects/{project.json()['id']}/import", params={"format": "native"},
                               content=native_lines(comparisons),
                               headers={"Content-Type": "application/x-ndjson"})  # fmt: skip
        assert imported.status_code == 200, imported.text
        assert imported.json()["comparisons_created"] == comparisons
        return project.json()["id"]


def rater_client(base_url: str, rater: dict) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers=rater["headers"], timeout=HTTP_TIMEOUT,
                        limits=httpx.Limits(max_connections=2))  # fmt: skip


def a_ranking(task: dict) -> list[list[int]]:
    ids = [option["id"] for option in task["options"]]
    random.shuffle(ids)
    return [[i] for i in ids]


def server_log(tmp_path: Path) -> str:
    return (tmp_path / "server.log").read_text()


def assert_clean_server_log(tmp_path: Path) -> None:
    log = server_log(tmp_path)
    assert "database is locked" not in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


def assert_counters_match_rows(session) -> None:
    """n_judgments and n_leases are kept by hand; they must equal the rows they count."""
    judged = dict(
        session.execute(select(Judgment.comparison_id, func.count()).group_by(Judgment.comparison_id)).all()
    )
    leased = dict(session.execute(
        select(Assignment.comparison_id, func.count()).where(Assignment.state == "active")
        .group_by(Assignment.comparison_id)
    ).all())  # fmt: skip
    for comparison in session.scalars(select(Comparison)):
        assert comparison.n_judgments == judged.get(comparison.id, 0), comparison.id
        assert comparison.n_leases == leased.get(comparison.id, 0), comparison.id
        assert comparison.n_judgments + comparison.n_leases <= comparison.required, comparison.id


def test_forty_raters_fill_every_comparison_exactly(db_url, users, live_server, tmp_path):
    admin = users.create("admin", "admin")
    raters = create_raters(db_url, RATERS)
    project_id = create_project(live_server, admin, comparisons=COMPARISONS, overlap=OVERLAP)
    errors: list[str] = []
    submitted = Counter()

    def rate_until_done(rater: dict) -> None:
        with rater_client(live_server, rater) as client:
            for _ in range(COMPARISONS + 1):  # a rater can judge each comparison once at most
                task = client.get(f"/api/v1/projects/{project_id}/tasks/next")
                if task.status_code == 204:
                    return
                if task.status_code != 200:
                    errors.append(f"next-task {task.status_code}: {task.text}")
                    return
                body = task.json()
                response = client.post(f"/api/v1/assignments/{body['assignment_id']}/judgment",
                                       json={"ranking": a_ranking(body)})  # fmt: skip
                if response.status_code != 201:
                    errors.append(f"judgment {response.status_code}: {response.text}")
                    return
                submitted[rater["id"]] += 1
            errors.append(f"rater {rater['id']} was never told the queue is empty")

    with ThreadPoolExecutor(RATERS) as pool:
        for future in [pool.submit(rate_until_done, rater) for rater in raters]:
            future.result()

    assert errors == []
    assert sum(submitted.values()) == COMPARISONS * OVERLAP
    assert len(submitted) > 1, "the work should spread over several raters"
    with session_factory(db_url)() as session:
        per_comparison = session.execute(
            select(Judgment.comparison_id, func.count(), func.count(func.distinct(Judgment.rater_id)))
            .group_by(Judgment.comparison_id)
        ).all()  # fmt: skip
        assert len(per_comparison) == COMPARISONS
        assert {(n, distinct) for _, n, distinct in per_comparison} == {(OVERLAP, OVERLAP)}
        states = dict(
            session.execute(select(Assignment.state, func.count()).group_by(Assignment.state)).all()
        )
        assert states == {"submitted": COMPARISONS * OVERLAP}
        assert_counters_match_rows(session)
    assert_clean_server_log(tmp_path)


SERVER_THREADS = 40
"""Starlette's default threadpool: requests beyond it wait for a thread, some of them holding locks."""


@pytest.mark.parametrize("threads", [20, SERVER_THREADS + 24], ids=["20", "more-than-server-threads"])
def test_simultaneous_submits_of_one_assignment_make_one_judgment(
    db_url, users, live_server, tmp_path, threads
):
    """The first submit locks the assignment and the others wait for it. With more of them than server
    threads, the first one must still get to commit: no step of a request that holds locks may wait
    for a worker thread while those threads wait for its locks."""
    admin = users.create("admin", "admin")
    (rater,) = create_raters(db_url, 1)
    rounds = 5 if threads <= SERVER_THREADS else 2
    project_id = create_project(live_server, admin, comparisons=rounds, overlap=1)
    clients = [rater_client(live_server, rater) for _ in range(threads)]
    try:
        for _ in range(rounds):
            task = clients[0].get(f"/api/v1/projects/{project_id}/tasks/next")
            assert task.status_code == 200, task.text
            body = task.json()
            url = f"/api/v1/assignments/{body['assignment_id']}/judgment"
            rankings = [a_ranking(body) for _ in range(threads)]
            start = threading.Barrier(threads)

            def submit(i: int, url=url, rankings=rankings, start=start) -> httpx.Response:
                start.wait()
                return clients[i].post(url, json={"ranking": rankings[i]})

            with ThreadPoolExecutor(threads) as pool:
                responses = list(pool.map(submit, range(threads)))
            statuses = sorted(r.status_code for r in responses)
            assert statuses == [200] * (threads - 1) + [201], [r.text for r in responses]
            first = next(r.json() for r in responses if r.status_code == 201)
            assert {r.json()["id"] for r in responses} == {first["id"]}
            with session_factory(db_url)() as session:
                stored = session.scalars(
                    select(Judgment).where(Judgment.assignment_id == body["assignment_id"])
                ).all()
                assert len(stored) == 1
                assert stored[0].ranking == first["ranking"]
                comparison = session.get(Comparison, body["comparison_id"])
                assert (comparison.n_judgments, comparison.n_leases) == (1, 0)
    finally:
        for client in clients:
            client.close()
    with session_factory(db_url)() as session:
        assert session.scalar(select(func.count()).select_from(Judgment)) == rounds
        assert_counters_match_rows(session)
    assert_clean_server_log(tmp_path)


def test_claim_storm_never_leases_one_rater_two_comparisons(db_url, users, live_server, tmp_path):
    """Every rater asks for its next task from several threads at once, round after round.

    Fewer slots than raters in the late rounds, so raters also race each other for the last ones.
    """
    admin = users.create("admin", "admin")
    raters = create_raters(db_url, RATERS)
    comparisons, overlap, threads_per_rater, calls_per_thread = 30, 2, 3, 2
    project_id = create_project(live_server, admin, comparisons=comparisons, overlap=overlap)
    clients = {r["id"]: [rater_client(live_server, r) for _ in range(threads_per_rater)] for r in raters}
    judged = 0
    try:
        for _ in range(comparisons * overlap):  # bound: each round judges at least one comparison
            start = threading.Barrier(RATERS * threads_per_rater)

            def storm(rater_id: int, i: int, start=start) -> list[httpx.Response]:
                start.wait()
                return [clients[rater_id][i].get(f"/api/v1/projects/{project_id}/tasks/next")
                        for _ in range(calls_per_thread)]  # fmt: skip

            with ThreadPoolExecutor(RATERS * threads_per_rater) as pool:
                futures = {
                    (r["id"], i): pool.submit(storm, r["id"], i)
                    for r in raters
                    for i in range(threads_per_rater)
                }
                answers: dict[int, list[httpx.Response]] = defaultdict(list)
                for (rater_id, _), future in futures.items():
                    answers[rater_id] += future.result()

            leased: dict[int, dict] = {}
            for rater_id, responses in answers.items():
                statuses = {r.status_code for r in responses}
                assert statuses <= {200, 204}, [r.text for r in responses if r.status_code not in (200, 204)]
                tasks = {r.json()["assignment_id"]: r.json() for r in responses if r.status_code == 200}
                # A rater whose lease exists is always resumed onto it; a 204 can only come before the lease.
                assert len(tasks) <= 1, f"rater {rater_id} was leased {sorted(tasks)} at once"
                if tasks:
                    leased[rater_id] = next(iter(tasks.values()))

            with session_factory(db_url)() as session:
                active = session.execute(
                    select(Assignment.rater_id, func.count()).where(Assignment.state == "active")
                    .group_by(Assignment.rater_id)
                ).all()  # fmt: skip
                assert all(n == 1 for _, n in active), active
                assert {rater_id for rater_id, _ in active} == set(leased)
                assert_counters_match_rows(session)
            if not leased:
                break
            for rater_id, task in leased.items():
                response = clients[rater_id][0].post(f"/api/v1/assignments/{task['assignment_id']}/judgment",
                                                     json={"ranking": a_ranking(task)})  # fmt: skip
                assert response.status_code == 201, response.text
                judged += 1
    finally:
        for pool_of_clients in clients.values():
            for client in pool_of_clients:
                client.close()

    assert judged == comparisons * overlap
    with session_factory(db_url)() as session:
        per_comparison = session.execute(
            select(func.count(), func.count(func.distinct(Judgment.rater_id))).group_by(Judgment.comparison_id)
        ).all()  # fmt: skip
        assert sorted(tuple(row) for row in per_comparison) == [(overlap, overlap)] * comparisons
        assert (
            session.scalar(select(func.count()).select_from(Assignment).where(Assignment.state == "active"))
            == 0
        )
    assert_clean_server_log(tmp_path)


def sqlite_path(db_url: str) -> str:
    assert db_url.startswith("sqlite"), db_url
    return db_url.removeprefix("sqlite:///")


def someone_else_can_take_the_write_lock(path: str) -> bool:
    """A second connection asks for the write lock without waiting (timeout 0)."""
    probe = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as error:
        assert "database is locked" in str(error)
        return False
    finally:
        probe.close()


# PostgreSQL claims lock rows (FOR UPDATE SKIP LOCKED), not the database: nothing to check there.
@pytest.mark.only_db("sqlite")
def test_sqlite_write_transaction_takes_the_write_lock_before_reading(db_url):
    """Claims and submits start with BEGIN IMMEDIATE: the lock is held before the first read, so no
    concurrent writer can invalidate what the claim reads, and no upgrade can fail half-way."""
    path = sqlite_path(db_url)
    with session_factory(db_url)() as session:
        session.scalar(select(func.count()).select_from(User))  # a request reads (who is calling?) first
        assert someone_else_can_take_the_write_lock(path), "a plain read must not hold the write lock"
        write_transaction(session)
        assert not someone_else_can_take_the_write_lock(path), "write_transaction must BEGIN IMMEDIATE"
        session.scalar(select(func.count()).select_from(Comparison))
        assert not someone_else_can_take_the_write_lock(path)
        session.rollback()
        assert someone_else_can_take_the_write_lock(path)
