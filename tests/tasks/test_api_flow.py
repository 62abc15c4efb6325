from sqlalchemy import func, select

from app.models import Assignment, Comparison, Judgment
from tests.helpers import import_lines, make_project, native_lines


def test_rater_gets_task_submits_and_queue_empties(client, users, db):
    admin = users.create("admin", "admin")
    rater = users.create("rita", "annotator")
    project = make_project(client, admin)
    assert import_lines(client, admin, project["id"], native_lines(3)).json()["comparisons_created"] == 3

    seen = []
    for _ in range(3):
        task = client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=rater["headers"])
        assert task.status_code == 200, task.text
        body = task.json()
        assert set(body) >= {"assignment_id", "comparison_id", "prompt", "options", "expires_at"}
        assert all(set(o) >= {"id", "text"} and "model" not in o for o in body["options"])
        seen.append(body["comparison_id"])
        ids = [o["id"] for o in body["options"]]
        response = client.post(f"/api/v1/assignments/{body['assignment_id']}/judgment",
                               json={"ranking": [[ids[1]], [ids[0]]]}, headers=rater["headers"])  # fmt: skip
        assert response.status_code == 201, response.text
        assert response.json()["ranking"] == [[ids[1]], [ids[0]]]
    assert len(set(seen)) == 3
    assert client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=rater["headers"]).status_code == 204
    assert db.scalar(select(func.count()).select_from(Judgment).where(Judgment.source == "human")) == 3


def test_resume_returns_the_same_lease(client, users):
    admin, rater = users.create("admin", "admin"), users.create("rita", "annotator")
    project = make_project(client, admin)
    import_lines(client, admin, project["id"], native_lines(2))
    first = client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=rater["headers"]).json()
    again = client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=rater["headers"]).json()
    assert again["assignment_id"] == first["assignment_id"]
    assert [o["id"] for o in again["options"]] == [o["id"] for o in first["options"]]


def test_double_submit_is_idempotent(client, users, db):
    admin, rater = users.create("admin", "admin"), users.create("rita", "annotator")
    project = make_project(client, admin)
    import_lines(client, admin, project["id"], native_lines(1))
    task = client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=rater["headers"]).json()
    ids = [o["id"] for o in task["options"]]
    url = f"/api/v1/assignments/{task['assignment_id']}/judgment"
    first = client.post(url, json={"ranking": [[ids[0]], [ids[1]]]}, headers=rater["headers"])
    second = client.post(url, json={"ranking": [[ids[1]], [ids[0]]]}, headers=rater["headers"])
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["id"] == first.json()["id"]
    assert db.scalar(select(func.count()).select_from(Judgment)) == 1
    comparison = db.get(Comparison, task["comparison_id"])
    assert (comparison.n_judgments, comparison.n_leases) == (1, 0)


def test_bad_rankings_are_refused(client, users):
    admin, rater = users.create("admin", "admin"), users.create("rita", "annotator")
    project = make_project(client, admin, allow_ties=False)
    import_lines(client, admin, project["id"], native_lines(1))
    task = client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=rater["headers"]).json()
    a, b = (o["id"] for o in task["options"])
    url = f"/api/v1/assignments/{task['assignment_id']}/judgment"
    for ranking in ([[a]], [[a], [a]], [[a], [b], [999999]], [[a, b]], [[]]):
        response = client.post(url, json={"ranking": ranking}, headers=rater["headers"])
        assert response.status_code == 422, (ranking, response.text)
        assert "detail" in response.json()
    # a tie is fine when both are bad
    response = client.post(url, json={"ranking": [[a, b]], "flags": ["all_bad"]}, headers=rater["headers"])
    assert response.status_code == 201


def test_another_raters_assignment_is_forbidden(client, users, db):
    admin = users.create("admin", "admin")
    rita, otto = users.create("rita", "annotator"), users.create("otto", "annotator")
    project = make_project(client, admin)
    import_lines(client, admin, project["id"], native_lines(1))
    task = client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=rita["headers"]).json()
    a, b = (o["id"] for o in task["options"])
    response = client.post(f"/api/v1/assignments/{task['assignment_id']}/judgment",
                           json={"ranking": [[a], [b]]}, headers=otto["headers"])  # fmt: skip
    assert response.status_code == 403
    assert db.scalar(select(func.count()).select_from(Judgment)) == 0


def test_expired_lease_whose_slot_was_refilled_is_refused(client, users, db):
    from datetime import timedelta

    from app.models import utcnow

    admin = users.create("admin", "admin")
    rita, otto = users.create("rita", "annotator"), users.create("otto", "annotator")
    project = make_project(client, admin, overlap=1)
    import_lines(client, admin, project["id"], native_lines(1))
    task = client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=rita["headers"]).json()
    assignment = db.get(Assignment, task["assignment_id"])
    assignment.expires_at = utcnow() - timedelta(seconds=1)
    db.commit()
    other = client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=otto["headers"])
    assert other.status_code == 200 and other.json()["comparison_id"] == task["comparison_id"]
    a, b = (o["id"] for o in task["options"])
    late = client.post(f"/api/v1/assignments/{task['assignment_id']}/judgment",
                       json={"ranking": [[a], [b]]}, headers=rita["headers"])  # fmt: skip
    assert late.status_code == 409
    db.expire_all()
    comparison = db.get(Comparison, task["comparison_id"])
    assert (comparison.n_judgments, comparison.n_leases) == (0, 1)


def test_expired_lease_with_free_slot_is_accepted(client, users, db):
    from datetime import timedelta

    from app.models import utcnow

    admin, rita = users.create("admin", "admin"), users.create("rita", "annotator")
    project = make_project(client, admin, overlap=1)
    import_lines(client, admin, project["id"], native_lines(1))
    task = client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=rita["headers"]).json()
    assignment = db.get(Assignment, task["assignment_id"])
    assignment.expires_at = utcnow() - timedelta(seconds=1)
    db.commit()
    a, b = (o["id"] for o in task["options"])
    late = client.post(f"/api/v1/assignments/{task['assignment_id']}/judgment",
                       json={"ranking": [[a], [b]]}, headers=rita["headers"])  # fmt: skip
    assert late.status_code == 201
    db.expire_all()
    comparison = db.get(Comparison, task["comparison_id"])
    assert (comparison.n_judgments, comparison.n_leases) == (1, 0)


def test_skip_frees_the_slot_and_is_not_offered_again(client, users, db):
    admin, rita = users.create("admin", "admin"), users.create("rita", "annotator")
    project = make_project(client, admin)
    import_lines(client, admin, project["id"], native_lines(1))
    task = client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=rita["headers"]).json()
    response = client.post(f"/api/v1/assignments/{task['assignment_id']}/skip", json={"reason": "unclear"},
                           headers=rita["headers"])  # fmt: skip
    assert response.status_code == 200 and response.json()["state"] == "skipped"
    assert client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=rita["headers"]).status_code == 204
    assert db.get(Comparison, task["comparison_id"]).n_leases == 0


def test_overlap_is_respected_and_no_rater_sees_a_comparison_twice(client, users, db):
    admin = users.create("admin", "admin")
    raters = [users.create(f"r{i}", "annotator") for i in range(4)]
    project = make_project(client, admin, overlap=3)
    import_lines(client, admin, project["id"], native_lines(4))
    for rater in raters:
        while (task := client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=rater["headers"])).status_code == 200:
            body = task.json()
            ids = [o["id"] for o in body["options"]]
            assert client.post(f"/api/v1/assignments/{body['assignment_id']}/judgment",
                               json={"ranking": [[ids[0]], [ids[1]]]}, headers=rater["headers"]).status_code == 201  # fmt: skip
    counts = db.execute(select(Judgment.comparison_id, func.count(), func.count(func.distinct(Judgment.rater_id)))
                        .group_by(Judgment.comparison_id)).all()  # fmt: skip
    assert sorted((n, d) for _, n, d in counts) == [(3, 3)] * 4
