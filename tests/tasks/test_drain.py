"""204 only when nothing is left: raters who stop at their first 204 still complete every comparison.

A claim takes candidates FOR UPDATE SKIP LOCKED, and a submit locks the comparison it counts on; a claim that
ran while another rater submitted on the last open comparison used to skip it and answer 204 although a slot
remained, and a rater who believed that stopped for good. Many small queues, five raters each, overlap 3, over
HTTP against a real uvicorn (SQLite and PostgreSQL): every comparison must end with all its judgments, and every
204 says why (`X-Queue-State: done`, or `busy` with a Retry-After).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from app.db import session_factory
from app.models import Comparison, Judgment
from tests.tasks.test_concurrency import (
    a_ranking,
    assert_clean_server_log,
    create_project,
    create_raters,
    rater_client,
)

QUEUES = 8
COMPARISONS = 4
OVERLAP = 3
RATERS_PER_QUEUE = 5


def test_raters_stopping_at_their_first_204_complete_every_comparison(db_url, users, live_server, tmp_path):
    admin = users.create("admin", "admin")
    raters = create_raters(db_url, RATERS_PER_QUEUE)
    projects = [create_project(live_server, admin, comparisons=COMPARISONS, overlap=OVERLAP) for _ in range(QUEUES)]
    errors: list[str] = []
    last_answers: list[tuple[str | None, str | None]] = []
    lock = threading.Lock()
    start = threading.Barrier(QUEUES * RATERS_PER_QUEUE)

    def rate_until_first_204(project_id: int, rater: dict) -> None:
        with rater_client(live_server, rater) as client:
            start.wait()
            for _ in range(COMPARISONS + 1):
                task = client.get(f"/api/v1/projects/{project_id}/tasks/next")
                if task.status_code == 204:
                    with lock:
                        last_answers.append((task.headers.get("x-queue-state"), task.headers.get("retry-after")))
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
            errors.append(f"rater {rater['id']} was never told the queue is empty")

    with ThreadPoolExecutor(QUEUES * RATERS_PER_QUEUE) as pool:
        futures = [pool.submit(rate_until_first_204, p, r) for p in projects for r in raters]
        for future in futures:
            future.result()

    assert errors == []
    assert len(last_answers) == QUEUES * RATERS_PER_QUEUE
    for state, retry_after in last_answers:
        assert state in ("done", "busy"), state
        assert (retry_after is not None) == (state == "busy"), (state, retry_after)
    with session_factory(db_url)() as session:
        judged = dict(session.execute(select(Judgment.comparison_id, func.count()).group_by(Judgment.comparison_id)).all())
        comparisons = session.execute(select(Comparison.id, Comparison.required, Comparison.n_judgments)).all()
        assert len(comparisons) == QUEUES * COMPARISONS
        incomplete = [(c.id, judged.get(c.id, 0), c.required) for c in comparisons if judged.get(c.id, 0) != c.required]
        assert incomplete == [], f"(comparison, judgments, required) left incomplete: {incomplete}"
        assert all(c.n_judgments == c.required for c in comparisons)
    assert_clean_server_log(tmp_path)
