"""Trajectories are handed out under leases (the assignment contract): a live lease is resumed, it holds a slot, a
lapsed one gives it back, and no trajectory collects more step judgments than the project's overlap, also with
raters labelling at the same time (threads against a real server) on SQLite and PostgreSQL."""

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
from sqlalchemy import func, select, update

from app.db import session_factory
from app.models import StepJudgment, TrajectoryLease, utcnow
from tests.helpers import import_lines, make_project
from tests.steps.trajectories import trajectory_file
from tests.tasks.test_concurrency import assert_clean_server_log, create_raters

GOOD = {"labels": [{"label": "good", "tags": []}] * 2}


def test_next_trajectory_leases_resumes_expires_and_never_over_collects(client, users, db_url):
    admin, ann, bob, cid = (users.create("admin", "admin"), users.create("ann", "annotator"),
                            users.create("bob", "annotator"), users.create("cid", "annotator"))  # fmt: skip
    project = make_project(client, admin, overlap=1)
    assert import_lines(client, admin, project["id"], trajectory_file(["q"], n_steps=2), "openai-chat").status_code < 300
    base = f"/api/v1/projects/{project['id']}"
    first = client.get(f"{base}/steps/next", headers=ann["headers"])
    assert first.status_code == 200 and first.json()["expires_at"]
    t1 = first.json()["completion_id"]
    assert client.get(f"{base}/steps/next", headers=ann["headers"]).json()["completion_id"] == t1  # resumed
    t2 = client.get(f"{base}/steps/next", headers=bob["headers"]).json()["completion_id"]
    assert t2 != t1  # t1's one slot is leased to ann
    busy = client.get(f"{base}/steps/next", headers=cid["headers"])
    assert busy.status_code == 204 and busy.headers["Retry-After"]  # every free slot is leased to others
    # without a lease, a full trajectory refuses labels (the slot is ann's)
    assert client.post(f"{base}/trajectories/{t1}/step-labels", json=GOOD, headers=cid["headers"]).status_code == 409
    # ann's lease lapses: its slot goes to cid, and ann's late labels are refused
    with session_factory(db_url)() as session:
        session.execute(update(TrajectoryLease).where(TrajectoryLease.completion_id == t1)
                        .values(expires_at=utcnow() - timedelta(seconds=1)))  # fmt: skip
        session.commit()
    assert client.get(f"{base}/steps/next", headers=cid["headers"]).json()["completion_id"] == t1
    late = client.post(f"{base}/trajectories/{t1}/step-labels", json=GOOD, headers=ann["headers"])
    assert late.status_code == 409 and "expired" in late.json()["detail"]
    assert client.post(f"{base}/trajectories/{t1}/step-labels", json=GOOD, headers=cid["headers"]).status_code == 201
    assert client.post(f"{base}/trajectories/{t2}/step-labels", json=GOOD, headers=bob["headers"]).status_code == 201
    for rater in (ann, bob, cid):
        assert client.get(f"{base}/steps/next", headers=rater["headers"]).status_code == 204
    with session_factory(db_url)() as session:
        states = Counter(session.scalars(select(TrajectoryLease.state)))
        assert states == {"submitted": 2, "expired": 1}
        assert sorted(session.scalars(select(func.count()).select_from(StepJudgment)
                                      .group_by(StepJudgment.completion_id))) == [1, 1]  # fmt: skip


TRAJECTORIES, OVERLAP, RATERS = 6, 2, 8


def test_concurrent_raters_fill_each_trajectory_exactly(db_url, users, live_server, tmp_path):
    admin = users.create("admin", "admin")
    raters = create_raters(db_url, RATERS)
    with httpx.Client(base_url=live_server, headers=admin["headers"], timeout=30) as client:
        project = make_project(client, admin, overlap=OVERLAP)
        imported = import_lines(client, admin, project["id"], trajectory_file(["a", "b", "c"], n_steps=2),
                                "openai-chat")  # fmt: skip
        assert imported.status_code < 300, imported.text
    base = f"/api/v1/projects/{project['id']}"
    errors: list[str] = []
    labelled = Counter()
    start = threading.Barrier(RATERS)

    def label_until_done(rater: dict) -> None:
        with httpx.Client(base_url=live_server, headers=rater["headers"], timeout=30) as client:
            start.wait()
            for _ in range(TRAJECTORIES + 1):
                task = client.get(f"{base}/steps/next")
                if task.status_code == 204:
                    return
                if task.status_code != 200:
                    errors.append(f"next {task.status_code}: {task.text}")
                    return
                saved = client.post(f"{base}/trajectories/{task.json()['completion_id']}/step-labels", json=GOOD)
                if saved.status_code != 201:
                    errors.append(f"labels {saved.status_code}: {saved.text}")
                    return
                labelled[rater["id"]] += 1
            errors.append("never told that nothing is left")

    with ThreadPoolExecutor(RATERS) as pool:
        for future in [pool.submit(label_until_done, rater) for rater in raters]:
            future.result()
    assert errors == []
    assert sum(labelled.values()) == TRAJECTORIES * OVERLAP and len(labelled) > 1

    # raters with no lease (a trajectory opened by link) all submitting at once: still only the overlap's worth
    with httpx.Client(base_url=live_server, headers=admin["headers"], timeout=30) as client:
        tid = client.get(f"{base}/step-labels").json()["step_labels"][0]["completion_id"]
        branch = client.post(f"{base}/trajectories/{tid}/branches", json={"step": 1, "content": "Rewritten."})
        assert branch.status_code == 201, branch.text
        branch_id = branch.json()["completion_id"]
    at_once = threading.Barrier(RATERS)

    def label_by_link(rater: dict) -> int:
        with httpx.Client(base_url=live_server, headers=rater["headers"], timeout=30) as client:
            at_once.wait()
            body = {"labels": [{"label": "good", "tags": []}] * 2}
            return client.post(f"{base}/trajectories/{branch_id}/step-labels", json=body).status_code

    with ThreadPoolExecutor(RATERS) as pool:
        codes = Counter(pool.map(label_by_link, raters))
    assert codes == {201: OVERLAP, 409: RATERS - OVERLAP}, codes

    with session_factory(db_url)() as session:
        per_trajectory = session.execute(
            select(StepJudgment.completion_id, func.count(), func.count(func.distinct(StepJudgment.rater_id)))
            .group_by(StepJudgment.completion_id)).all()  # fmt: skip
        assert len(per_trajectory) == TRAJECTORIES + 1
        assert {(n, distinct) for _, n, distinct in per_trajectory} == {(OVERLAP, OVERLAP)}
        states = Counter(session.scalars(select(TrajectoryLease.state)))
        assert states == {"submitted": TRAJECTORIES * OVERLAP}
    assert_clean_server_log(tmp_path)


def test_turning_members_only_on_revokes_trajectory_leases_of_non_members(client, users, db_url):
    admin, ann = users.create("admin", "admin"), users.create("ann", "annotator")
    project = make_project(client, admin, overlap=1)
    assert import_lines(client, admin, project["id"], trajectory_file(["q"], n_steps=2), "openai-chat").status_code < 300
    base = f"/api/v1/projects/{project['id']}"
    assert client.get(f"{base}/steps/next", headers=ann["headers"]).status_code == 200
    assert client.patch(base, json={"members_only": True}, headers=admin["headers"]).status_code == 200
    with session_factory(db_url)() as session:
        assert list(session.scalars(select(TrajectoryLease.state))) == ["revoked"]
