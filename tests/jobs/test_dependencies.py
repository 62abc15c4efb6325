"""Job dependencies in the generic queue: a job waits for the jobs it depends on, a failed one stops it (and
what waits on it), retry puts the failed job and the jobs it stopped back in the queue."""

from __future__ import annotations

from app.db import session_scope
from app.jobs import service
from app.jobs.runner import run_one
from app.models import Job


def _make(kind: str, depends_on=()) -> int:
    with session_scope(write=True) as db:
        return service.create_job(db, kind, project_id=None, depends_on=depends_on).id


def _status(job_id: int) -> str:
    with session_scope() as db:
        return db.get(Job, job_id).status


def test_a_job_waits_for_its_dependencies_and_runs_after_them(db_url):
    ran = []

    def handler(ctx):
        ran.append(ctx.job_id)
        return {}

    handlers = {"a": handler, "b": handler}
    second = _make("b")
    first = _make("a")
    third = _make("b", depends_on=[first, second])
    with session_scope() as db:
        assert service.job_json(db.get(Job, third))["depends_on"] == sorted([first, second])
    assert run_one("w", {"b": handler}) == second  # `third` is older than nothing but still waits for `first`
    assert run_one("w", {"b": handler}) is None
    assert run_one("w", handlers) == first
    assert run_one("w", handlers) == third
    assert ran == [second, first, third]


def test_a_failed_dependency_stops_the_chain_and_retry_resumes_it(db_url):
    attempts = {"n": 0}

    def flaky(ctx):
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise RuntimeError("boom")
        return {"ok": True}

    def fine(ctx):
        return {}

    handlers = {"a": flaky, "b": fine}
    first = _make("a")
    second = _make("b", depends_on=[first])
    third = _make("b", depends_on=[second])
    assert run_one("w", handlers) == first
    assert [_status(j) for j in (first, second, third)] == ["failed", "failed", "failed"]
    with session_scope() as db:
        assert f"Job {first}" in db.get(Job, second).error
        assert f"Job {second}" in db.get(Job, third).error
    with session_scope(write=True) as db:
        assert sorted(service.retry(db, db.get(Job, first))) == [first, second, third]
    assert [_status(j) for j in (first, second, third)] == ["queued", "queued", "queued"]
    for _ in range(3):
        assert run_one("w", handlers) is not None
    assert [_status(j) for j in (first, second, third)] == ["succeeded"] * 3


def test_cancelling_a_queued_dependency_cancels_its_dependents(db_url):
    first = _make("a")
    second = _make("b", depends_on=[first])
    with session_scope(write=True) as db:
        service.request_cancel(db, db.get(Job, first))
    assert _status(second) == "cancelled"
    late = _make("b", depends_on=[first])  # depending on a job that already ended badly: stopped at once
    assert _status(late) == "cancelled"
