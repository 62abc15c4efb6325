"""Members-only projects: removing a member revokes their leases (slot back, submit refused), and the rule holds
for every role that can rate (engineers and admins who claim tasks too)."""

from __future__ import annotations

from sqlalchemy import select

from app.db import session_scope
from tests.auth.test_auth import login, session_csrf
from tests.helpers import import_lines, make_project, native_lines


def _set_members(client, project_id: int, user_ids: list[int], members_only: bool = True):
    html = {"Accept": "text/html"}
    response = client.post(f"/projects/{project_id}/members",
                           data={"csrf_token": session_csrf(client), "user_id": [str(i) for i in user_ids],
                                 "members_only": "true" if members_only else ""},
                           headers=html, follow_redirects=False)  # fmt: skip
    assert response.status_code == 303, response.text


def _counters(db_url, comparison_id):
    from app.models import Comparison

    with session_scope(db_url) as session:
        comparison = session.get(Comparison, comparison_id)
        return comparison.n_leases, comparison.n_judgments


def test_removed_member_loses_the_lease_and_cannot_submit_it(client, users, db_url):
    from app.models import Assignment

    admin = users.create("admin", "admin")
    anna = users.create("anna", "annotator")
    bert = users.create("bert", "annotator")
    project = make_project(client, admin, overlap=1)
    assert import_lines(client, admin, project["id"], native_lines(1)).status_code == 200
    assert login(client, "admin", "secret-pass-1").status_code == 303
    _set_members(client, project["id"], [anna["id"], bert["id"]])

    task = client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=anna["headers"]).json()
    assert _counters(db_url, task["comparison_id"]) == (1, 0)
    # bert gets nothing: the only comparison's one slot is leased to anna
    assert client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=bert["headers"]).status_code == 204

    _set_members(client, project["id"], [bert["id"]])  # anna removed
    with session_scope(db_url) as session:
        assert session.get(Assignment, task["assignment_id"]).state == "revoked"
    assert _counters(db_url, task["comparison_id"]) == (0, 0)  # the slot is free again

    ids = [o["id"] for o in task["options"]]
    refused = client.post(f"/api/v1/assignments/{task['assignment_id']}/judgment",
                          json={"ranking": [[ids[0]], [ids[1]]]}, headers=anna["headers"])  # fmt: skip
    assert refused.status_code == 403, refused.text
    assert client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=anna["headers"]).status_code == 403
    # ... and the slot went to a member
    second = client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=bert["headers"])
    assert second.status_code == 200 and second.json()["comparison_id"] == task["comparison_id"]
    assert _counters(db_url, task["comparison_id"]) == (1, 0)


def test_a_lapsed_lease_of_a_removed_member_cannot_be_submitted_either(client, users, db_url):
    """Even when the lease was not revoked (e.g. the member was removed directly in the database), the submit
    checks membership."""
    from app.models import ProjectMember

    admin = users.create("admin", "admin")
    anna = users.create("anna", "annotator")
    project = make_project(client, admin, overlap=1)
    assert import_lines(client, admin, project["id"], native_lines(1)).status_code == 200
    assert login(client, "admin", "secret-pass-1").status_code == 303
    _set_members(client, project["id"], [anna["id"]])
    task = client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=anna["headers"]).json()
    with session_scope(db_url) as session:
        for member in session.scalars(select(ProjectMember)):
            session.delete(member)
    ids = [o["id"] for o in task["options"]]
    refused = client.post(f"/api/v1/assignments/{task['assignment_id']}/judgment",
                          json={"ranking": [[ids[0]], [ids[1]]]}, headers=anna["headers"])  # fmt: skip
    assert refused.status_code == 403
    assert _counters(db_url, task["comparison_id"]) == (1, 0)


def test_turning_members_only_on_revokes_the_leases_of_non_members(client, users, db_url):
    admin = users.create("admin", "admin")
    anna = users.create("anna", "annotator")
    project = make_project(client, admin, overlap=1)
    assert import_lines(client, admin, project["id"], native_lines(1)).status_code == 200
    task = client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=anna["headers"]).json()
    updated = client.patch(f"/api/v1/projects/{project['id']}", json={"members_only": True}, headers=admin["headers"])
    assert updated.status_code == 200, updated.text
    assert _counters(db_url, task["comparison_id"]) == (0, 0)


def test_members_only_holds_for_engineers_and_admins_who_rate(client, users, db_url):
    admin = users.create("admin", "admin")
    eng = users.create("eng", "engineer")
    other_admin = users.create("root2", "admin")
    anna = users.create("anna", "annotator")
    project = make_project(client, admin, overlap=3)
    assert import_lines(client, admin, project["id"], native_lines(2)).status_code == 200
    assert login(client, "admin", "secret-pass-1").status_code == 303
    _set_members(client, project["id"], [anna["id"], eng["id"]])
    page = client.get(f"/projects/{project['id']}/members", headers={"Accept": "text/html"})
    assert page.status_code == 200 and "eng" in page.text and "root2" in page.text  # every role can be a member

    for outsider in (other_admin,):
        refused = client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=outsider["headers"])
        assert refused.status_code == 403, outsider["username"]
    assert client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=eng["headers"]).status_code == 200
    _set_members(client, project["id"], [anna["id"]])  # the engineer removed
    assert client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=eng["headers"]).status_code == 403
    # Staff still manage the project: its admin pages and API stay open to them.
    assert client.get(f"/api/v1/projects/{project['id']}", headers=other_admin["headers"]).status_code == 200
