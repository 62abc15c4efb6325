"""User management through the API and the admin pages: create, role, deactivate (tokens revoked), reset
password, membership, audit log."""

from __future__ import annotations

from sqlalchemy import select

from app.db import session_scope
from tests.auth.test_auth import login, session_csrf
from tests.helpers import make_project


def test_admin_manages_users_through_the_api(client, users, db_url):
    from app.models import AuditLog

    admin = users.create("admin", "admin")
    anna = users.create("anna", "annotator")
    assert client.get("/api/v1/users", headers=anna["headers"]).status_code == 403
    created = client.post("/api/v1/users", json={"username": "bob", "role": "engineer", "password": "long-enough-1"},
                          headers=admin["headers"])  # fmt: skip
    assert created.status_code == 201 and created.json()["role"] == "engineer"
    duplicate = client.post("/api/v1/users", json={"username": "bob", "role": "engineer", "password": "long-enough-1"},
                            headers=admin["headers"])  # fmt: skip
    assert duplicate.status_code == 409
    assert sorted(u["username"] for u in client.get("/api/v1/users", headers=admin["headers"]).json()) == [
        "admin", "anna", "bob"]  # fmt: skip

    # Deactivating ends API access at once: the token is revoked, not just the sessions.
    assert client.get("/api/v1/projects", headers=anna["headers"]).status_code == 200
    response = client.patch(f"/api/v1/users/{anna['id']}", json={"is_active": False}, headers=admin["headers"])
    assert response.status_code == 200 and response.json()["is_active"] is False
    assert client.get("/api/v1/projects", headers=anna["headers"]).status_code == 401
    client.patch(f"/api/v1/users/{anna['id']}", json={"is_active": True}, headers=admin["headers"])
    assert client.get("/api/v1/projects", headers=anna["headers"]).status_code == 401  # still revoked

    bob_id = created.json()["id"]
    assert client.patch(f"/api/v1/users/{bob_id}", json={"role": "admin"}, headers=admin["headers"]).json()["role"] == "admin"
    assert client.patch(f"/api/v1/users/{bob_id}", json={"role": "boss"}, headers=admin["headers"]).status_code == 422
    assert client.patch(f"/api/v1/users/{admin['id']}", json={"is_active": False},
                        headers=admin["headers"]).status_code == 422  # fmt: skip
    assert client.patch(f"/api/v1/users/{bob_id}", json={"password": "new-password-9"},
                        headers=admin["headers"]).status_code == 200  # fmt: skip
    assert login(client, "bob", "new-password-9").status_code == 303
    with session_scope(db_url) as session:
        actions = session.scalars(select(AuditLog.action).order_by(AuditLog.id)).all()
    assert {"user.create", "user.deactivate", "user.activate", "user.role", "user.password_reset"} <= set(actions)


def test_admin_pages_users_members_audit(client, users, db_url):
    from app.models import ProjectMember

    admin = users.create("admin", "admin")
    anna = users.create("anna", "annotator")
    project = make_project(client, admin)
    assert login(client, "admin", "secret-pass-1").status_code == 303
    csrf = session_csrf(client)
    html = {"Accept": "text/html"}
    page = client.get("/admin/users", headers=html)
    assert page.status_code == 200 and "anna" in page.text
    created = client.post("/admin/users", data={"csrf_token": csrf, "username": "carl", "role": "annotator",
                                                "password": "carl-password"}, headers=html, follow_redirects=False)  # fmt: skip
    assert created.status_code == 303
    no_csrf = client.post("/admin/users", data={"username": "dave", "role": "annotator", "password": "dave-password"},
                          headers=html, follow_redirects=False)  # fmt: skip
    assert no_csrf.status_code == 403
    short = client.post("/admin/users", data={"csrf_token": csrf, "username": "eve", "role": "annotator",
                                              "password": "short"}, headers=html)  # fmt: skip
    assert short.status_code == 422 and "at least 8" in short.text
    deactivated = client.post(f"/admin/users/{anna['id']}/active", data={"csrf_token": csrf}, headers=html,
                              follow_redirects=False)  # fmt: skip
    assert deactivated.status_code == 303
    assert client.get("/api/v1/projects", headers=anna["headers"]).status_code == 401

    members = client.post(f"/projects/{project['id']}/members",
                          data={"csrf_token": csrf, "user_id": [str(anna["id"])], "members_only": "true"},
                          headers=html, follow_redirects=False)  # fmt: skip
    assert members.status_code == 303
    with session_scope(db_url) as session:
        assert session.scalars(select(ProjectMember.user_id)).all() == [anna["id"]]
    assert client.get(f"/projects/{project['id']}/members", headers=html).status_code == 200
    audit = client.get("/admin/audit", headers=html)
    assert audit.status_code == 200 and "user.deactivate" in audit.text and "project.members" in audit.text
